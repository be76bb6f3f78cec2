//! The other services, as the explorer page asks them: their parked events, through their
//! operator endpoint `GET /sagas/stuck` (API composition; orders-svc never reads their
//! databases). A service that does not answer in time is reported as such, never waited for.

use serde::Deserialize;
use uuid::Uuid;

use crate::config::PeerSettings;

/// A parked event as a service's `GET /sagas/stuck` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ParkedElsewhere {
    pub saga_id: Option<Uuid>,
    pub event_type: String,
    pub error: String,
    pub attempts: i64,
    pub parked_at: String,
}

/// What one service answered.
#[derive(Debug, Clone)]
pub struct PeerParked {
    pub service: &'static str,
    /// Its parked events, or why they could not be had.
    pub parked: Result<Vec<ParkedElsewhere>, String>,
}

#[derive(Debug, Clone)]
pub struct Peers {
    client: reqwest::Client,
    services: [(&'static str, String); 2],
}

#[derive(Deserialize)]
struct StuckBody {
    parked: Vec<ParkedElsewhere>,
}

impl Peers {
    pub fn new(settings: &PeerSettings) -> Peers {
        Peers {
            client: reqwest::Client::builder()
                .timeout(settings.timeout)
                .connect_timeout(settings.timeout)
                .build()
                .unwrap_or_default(),
            services: [
                ("payments-svc", settings.payments_url.clone()),
                ("inventory-svc", settings.inventory_url.clone()),
            ],
        }
    }

    /// Every other service's parked events, asked at the same time with the caller's
    /// `authorization` (an operator's token: they check it as this service did).
    pub async fn parked(&self, authorization: &str) -> Vec<PeerParked> {
        let asks = self.services.iter().map(|(service, url)| async move {
            PeerParked {
                service,
                parked: self.stuck(url, authorization).await,
            }
        });
        futures::future::join_all(asks).await
    }

    async fn stuck(&self, url: &str, authorization: &str) -> Result<Vec<ParkedElsewhere>, String> {
        let response = self
            .client
            .get(format!("{url}/sagas/stuck"))
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let body: StuckBody = response.json().await.map_err(|e| describe(&e))?;
        Ok(body.parked)
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "did not answer in time".to_owned()
    } else if error.is_connect() {
        "unreachable".to_owned()
    } else {
        error.to_string()
    }
}
