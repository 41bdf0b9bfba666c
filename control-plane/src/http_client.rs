//! The one HTTP client the control plane calls out with (edge purges; `flexphoto import`
//! speaks the API with the same builder): pooled connections, TLS through rustls, bounded
//! connect and request times.

use std::time::Duration;

/// A pooled client with TLS, a 5 s connect timeout and the given whole-request timeout.
pub fn client_with_timeout(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("flexphoto/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The service's client: requests end after 10 s.
pub fn client() -> reqwest::Result<reqwest::Client> {
    client_with_timeout(Duration::from_secs(10))
}
