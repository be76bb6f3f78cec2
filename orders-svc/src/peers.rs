//! The other services, asked over their HTTP APIs (API composition; orders-svc never reads
//! their databases): their parked events for the explorer page (`GET /sagas/stuck`), and an
//! order's payment and reservation for `GET /orders/{id}/details` (`GET /payments`,
//! `GET /reservations`). Every call carries the caller's token and the trace context, is
//! bounded by `PEER_TIMEOUT_MS`, and a service that does not answer in time is reported as
//! such, never waited for.

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
        let body: StuckBody = self
            .get(&format!("{url}/sagas/stuck"), authorization)
            .await?;
        Ok(body.parked)
    }

    /// The order's payment, from payments-svc: `None` while it has decided none.
    pub async fn payment_of(
        &self,
        order_id: Uuid,
        authorization: &str,
    ) -> Result<Option<serde_json::Value>, String> {
        let url = &self.services[0].1;
        let mut body: serde_json::Value = self
            .get(
                &format!("{url}/payments?order_id={order_id}"),
                authorization,
            )
            .await?;
        Ok(first_of(&mut body["payments"]))
    }

    /// The order's reservation, from inventory-svc: `None` while it has made none.
    pub async fn reservation_of(
        &self,
        order_id: Uuid,
        authorization: &str,
    ) -> Result<Option<serde_json::Value>, String> {
        let url = &self.services[1].1;
        let mut body: serde_json::Value = self
            .get(
                &format!("{url}/reservations?order_id={order_id}"),
                authorization,
            )
            .await?;
        Ok(first_of(&mut body["reservations"]))
    }

    /// `GET url` with the caller's `authorization` and the current trace context, its JSON
    /// body, or why there is none.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        authorization: &str,
    ) -> Result<T, String> {
        let mut request = self
            .client
            .get(url)
            .header(reqwest::header::AUTHORIZATION, authorization);
        if let Some(traceparent) = saga_runtime::telemetry::current_traceparent() {
            request = request.header(shared_events::envelope::headers::TRACEPARENT, traceparent);
        }
        let response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        response.json().await.map_err(|e| describe(&e))
    }
}

/// The first element of a list in a body, taken out of it.
fn first_of(list: &mut serde_json::Value) -> Option<serde_json::Value> {
    list.as_array_mut()
        .filter(|items| !items.is_empty())
        .map(|items| items.swap_remove(0))
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
