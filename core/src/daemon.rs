//! What every binary's `main` does the same way: `validate -c FILE`, and
//! `run`: load the config (every problem and exit 2 when it is broken),
//! start the runtime, install the signal handlers, run, map the result to an
//! exit code.

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use crate::config::{load, Validate};
use crate::shutdown::Signals;

/// `validate -c FILE`: "ok" and exit 0, or every problem and exit 2.
pub fn validate<T: DeserializeOwned + Validate>(path: &Path) -> ExitCode {
    validate_with::<T, std::convert::Infallible>(path, |_| Ok(()))
}

/// As [`validate`], then `more` on the config (files it names, say).
pub fn validate_with<T: DeserializeOwned + Validate, E: Display>(
    path: &Path,
    more: impl FnOnce(&T) -> Result<(), E>,
) -> ExitCode {
    match load::<T>(path).map_err(|e| e.to_string()).and_then(|c| more(&c).map_err(|e| e.to_string())) {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `run -c FILE`: load the config, then `body(config, signals)` on a runtime.
pub fn run<T, F, Fut, E>(name: &str, path: &Path, body: F) -> ExitCode
where
    T: DeserializeOwned + Validate,
    F: FnOnce(T, Signals) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    crate::logging::init();
    let config = match load::<T>(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let threads = config.worker_threads();
    with_runtime_threads(name, threads, |signals| body(config, signals))
}

/// Pick rustls's crypto provider (ring) for the whole process. Needed once
/// before any TLS connection: with both of rustls's providers compiled in
/// (object_store brings the other), rustls will not guess.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Start a runtime and the signal handlers, run `body`, report its error.
pub fn with_runtime<F, Fut, E>(name: &str, body: F) -> ExitCode
where
    F: FnOnce(Signals) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    with_runtime_threads(name, 0, body)
}

/// [`with_runtime`] with `threads` workers: 0 = one per core, 1 = the
/// current-thread runtime.
pub fn with_runtime_threads<F, Fut, E>(name: &str, threads: usize, body: F) -> ExitCode
where
    F: FnOnce(Signals) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    install_crypto_provider();
    let built = match threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match Signals::from_process() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{name}: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        match body(signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "{name} failed");
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
