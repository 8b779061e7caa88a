// nats.go (the official Go client, which the `nats` CLI is built on)
// against flotilla-proxy, driven by proxy/tests/compat_matrix.rs. The same
// sub-commands as proxy/tests/py/compat_client.py (see there); each prints
// progress lines (`ready`, `primed`) and ends with one JSON line on stdout.
//
//	compat_client <command> --url nats://host:port [--user U --password P] [--ca PEM] [...]
//
// Built by the test (GOPATH mode, Debian's golang-github-nats-io-go-nats-dev).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

type args struct {
	url, user, password, subject, data, ca string
	expect, count                          int
	idle                                   float64
}

func out(v interface{}) {
	if s, ok := v.(string); ok {
		fmt.Println(s)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(b))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compat_client.go failed: %v\n", err)
	os.Exit(1)
}

func idle(a args) time.Duration { return time.Duration(a.idle * float64(time.Second)) }

// Errors the client surfaced to the application (its error handler).
type surfaced struct {
	mu   sync.Mutex
	errs []string
}

func (s *surfaced) add(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err.Error())
}

func (s *surfaced) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string{}, s.errs...)
}

func tail(a args, nc *nats.Conn) (interface{}, error) {
	var mu sync.Mutex
	got := map[string][][2]string{"all": {}, "web": {}, "q1": {}, "q2": {}}
	primed := map[string]bool{}
	said := false
	last := time.Now()
	cb := func(name string) nats.MsgHandler {
		return func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			last = time.Now()
			if string(m.Data) == "prime" {
				if name == "q1" || name == "q2" {
					primed["q"] = true
				} else {
					primed[name] = true
				}
				if !said && primed["all"] && primed["web"] && primed["q"] {
					said = true
					out("primed")
				}
				return
			}
			got[name] = append(got[name], [2]string{m.Subject, string(m.Data)})
		}
	}
	if _, err := nc.Subscribe("logs.>", cb("all")); err != nil {
		return nil, err
	}
	if _, err := nc.Subscribe("logs.web.*.*", cb("web")); err != nil {
		return nil, err
	}
	for _, q := range []string{"q1", "q2"} {
		if _, err := nc.QueueSubscribe("logs.>", "workers", cb(q)); err != nil {
			return nil, err
		}
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	out("ready")
	for {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		quiet := time.Since(last)
		done := said && ((len(got["all"]) >= a.expect && quiet > idle(a)) || quiet > 3*idle(a))
		if done {
			defer mu.Unlock()
			return got, nil // a short count is reported by the Rust side
		}
		mu.Unlock()
	}
}

func respond(a args, nc *nats.Conn) (interface{}, error) {
	seen := make(chan struct{}, a.count)
	_, err := nc.Subscribe(a.subject, func(m *nats.Msg) {
		out(map[string]string{"subject": m.Subject, "reply": m.Reply, "data": string(m.Data)})
		_ = m.Respond(append([]byte("pong:"), m.Data...))
		seen <- struct{}{}
	})
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	out("ready")
	answered := 0
	deadline := time.After(idle(a))
	for answered < a.count {
		select {
		case <-seen:
			answered++
		case <-deadline:
			return nil, fmt.Errorf("%d of %d requests in %v", answered, a.count, idle(a))
		}
	}
	return map[string]int{"answered": answered}, nc.Flush()
}

func request(a args, nc *nats.Conn) (interface{}, error) {
	var last error
	for attempt := 1; attempt <= 40; attempt++ {
		m, err := nc.Request(a.subject, []byte(a.data), 500*time.Millisecond)
		if err == nil {
			return map[string]interface{}{"ok": true, "data": string(m.Data), "subject": m.Subject, "attempts": attempt}, nil
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return map[string]interface{}{"ok": false, "error": last.Error()}, nil
}

func jspub(a args, nc *nats.Conn) (interface{}, error) {
	js, err := nc.JetStream()
	if err != nil {
		return nil, err
	}
	acks := []map[string]interface{}{}
	send := func(i int) error {
		id := fmt.Sprintf("go-%d", i)
		ack, err := js.Publish(a.subject, []byte(id), nats.MsgId(id), nats.AckWait(5*time.Second))
		if err != nil {
			return err
		}
		acks = append(acks, map[string]interface{}{"stream": ack.Stream, "seq": ack.Sequence, "duplicate": ack.Duplicate})
		return nil
	}
	for i := 0; i < a.count; i++ {
		if err := send(i); err != nil {
			return nil, err
		}
	}
	if err := send(0); err != nil {
		return nil, err
	}
	return map[string]interface{}{"acks": acks}, nil
}

func denied(a args, nc *nats.Conn, errs *surfaced) (interface{}, error) {
	if err := nc.Publish(a.subject, []byte("nope")); err != nil {
		return nil, err
	}
	_ = nc.Flush()
	for i := 0; i < 50 && len(errs.list()) == 0; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	flushed := nc.FlushTimeout(3*time.Second) == nil // still answers PING: the connection stayed open
	return map[string]interface{}{"errors": errs.list(), "connected": nc.IsConnected() && flushed}, nil
}

func errprobe(a args, nc *nats.Conn, errs *surfaced) (interface{}, error) {
	var mu sync.Mutex
	msgs := []string{}
	sub, err := nc.Subscribe("probe", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		msgs = append(msgs, string(m.Data))
	})
	if err != nil {
		return nil, err
	}
	_ = nc.Flush()
	out("ready")
	time.Sleep(2500 * time.Millisecond)
	flushed := nc.FlushTimeout(3*time.Second) == nil
	mu.Lock()
	defer mu.Unlock()
	last := ""
	if e := nc.LastError(); e != nil {
		last = e.Error()
	}
	return map[string]interface{}{
		"errors":    errs.list(),
		"msgs":      msgs,
		"connected": nc.IsConnected() && flushed,
		"closed":    nc.IsClosed(),
		"subClosed": !sub.IsValid(),
		"lastError": last,
	}, nil
}

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: compat_client <command> --url URL [...]"))
	}
	command := os.Args[1]
	var a args
	fs := flag.NewFlagSet(command, flag.ExitOnError)
	fs.StringVar(&a.url, "url", "", "server URL")
	fs.StringVar(&a.user, "user", "", "user")
	fs.StringVar(&a.password, "password", "", "password")
	fs.StringVar(&a.subject, "subject", "logs.>", "subject")
	fs.StringVar(&a.data, "data", "ping", "request payload")
	fs.StringVar(&a.ca, "ca", "", "PEM CA of the proxy's TLS certificate (tls:// URLs)")
	fs.IntVar(&a.expect, "expect", 0, "messages expected on logs.>")
	fs.IntVar(&a.count, "count", 1, "how many")
	fs.Float64Var(&a.idle, "idle", 5, "seconds")
	if err := fs.Parse(os.Args[2:]); err != nil {
		fail(err)
	}

	errs := &surfaced{}
	opts := []nats.Option{
		nats.NoReconnect(),
		nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs.add(err) }),
	}
	if a.user != "" {
		opts = append(opts, nats.UserInfo(a.user, a.password))
	}
	if a.ca != "" {
		opts = append(opts, nats.RootCAs(a.ca))
	}
	nc, err := nats.Connect(a.url, opts...)
	if err != nil {
		fail(err)
	}
	var result interface{}
	switch command {
	case "tail":
		result, err = tail(a, nc)
	case "respond":
		result, err = respond(a, nc)
	case "request":
		result, err = request(a, nc)
	case "jspub":
		result, err = jspub(a, nc)
	case "denied":
		result, err = denied(a, nc, errs)
	case "errprobe":
		result, err = errprobe(a, nc, errs)
	default:
		err = fmt.Errorf("unknown command %q", command)
	}
	if err != nil {
		fail(err)
	}
	out(result)
	nc.Close()
}
