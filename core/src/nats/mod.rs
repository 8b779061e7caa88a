//! NATS server lists: `url` keys take one URL or several separated by commas
//! (the nodes of a cluster), e.g. `nats://n1:4222,nats://n2:4222`. The client
//! connects to one of them and learns the rest of the cluster from it.

use async_nats::ServerAddr;

pub mod frames;

/// Every server of a `url` value, or what is wrong with the first bad one.
pub fn servers(value: &str) -> Result<Vec<ServerAddr>, String> {
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{value:?} has an empty entry: separate URLs with single commas"));
    }
    parts
        .iter()
        .map(|p| {
            let scheme_ok = ["nats://", "tls://"].iter().any(|s| p.starts_with(s) && p.len() > s.len());
            if !scheme_ok {
                return Err(format!("{p:?} is not a NATS URL like nats://127.0.0.1:4222"));
            }
            p.parse::<ServerAddr>().map_err(|e| format!("{p:?} is not a NATS URL: {e}"))
        })
        .collect()
}

/// `host:port` of every server when all are plain `nats://` (what a
/// connection without TLS can reach); `None` if any is `tls://` or
/// websocket, or there are none.
pub fn plain_addrs(servers: &[ServerAddr]) -> Option<Vec<String>> {
    if servers.is_empty() || servers.iter().any(|s| s.tls_required() || s.is_websocket()) {
        return None;
    }
    Some(servers.iter().map(|s| format!("{}:{}", s.host(), s.port())).collect())
}

/// Connect with `opts` to the servers of a `url` value; the error says what
/// was wrong with the list or the connection.
pub async fn connect(opts: async_nats::ConnectOptions, url: &str) -> Result<async_nats::Client, String> {
    opts.connect(servers(url)?).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_a_comma_separated_cluster() {
        assert_eq!(servers("nats://127.0.0.1:4222").unwrap().len(), 1);
        let three = servers("nats://a:4222, nats://b:4223,tls://c:4224").unwrap();
        assert_eq!(three.iter().map(|s| s.port()).collect::<Vec<_>>(), [4222, 4223, 4224]);
        assert_eq!(plain_addrs(&servers("nats://a:4222, nats://b:4223").unwrap()).unwrap(), ["a:4222", "b:4223"]);
        assert_eq!(plain_addrs(&three), None, "one is tls://");
        assert_eq!(plain_addrs(&[]), None);
        for bad in ["", "nats://a:1,", "nats://a:1,,nats://b:2", "http://a:1", "nats://a:1,b:2", "nats://a:99999"] {
            assert!(servers(bad).is_err(), "{bad:?}");
        }
    }
}
