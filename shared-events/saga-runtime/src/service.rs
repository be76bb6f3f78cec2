//! What a service needs to start: the pool, the producer and the relay's wake-up signal (and
//! the [`UnitOfWork`] over them), and [`run`], which drives the HTTP server, the relay and the
//! consumer until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use rdkafka::error::KafkaError;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{CommonSettings, ServiceDefaults};
use crate::consumer::{Applier, EventConsumer, EventHandler};
use crate::db::{self, ConnectError};
use crate::health::Health;
use crate::http::{self, HealthProbe};
use crate::kafka::SharedProducer;
use crate::outbox::OutboxSignal;
use crate::parking::Parking;
use crate::relay::Relay;
use crate::unit_of_work::UnitOfWork;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Database(#[from] ConnectError),
    #[error(transparent)]
    Migration(#[from] crate::db::MigrateError),
    #[error("kafka client setup failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Retention(#[from] crate::retention::RetentionError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// The connections one service process holds.
#[derive(Clone)]
pub struct Infrastructure {
    pub settings: CommonSettings,
    pub db: DatabaseConnection,
    /// The outbox relay's own connection (`db::connect_relay`).
    pub relay_db: DatabaseConnection,
    /// The relay's and the dead letters' producer, replaced if it fails fatally.
    pub producer: SharedProducer,
    pub outbox_signal: OutboxSignal,
    /// What the consumer and the relay report for `/health/live` and `/health/ready`.
    pub health: Health,
    /// Whether every unit of work records its events in the saga view.
    saga_view: bool,
}

impl Infrastructure {
    pub async fn connect(settings: CommonSettings) -> Result<Self, StartupError> {
        let db = db::connect(&settings.database).await?;
        let relay_db = db::connect_relay(&settings.database).await?;
        let producer = SharedProducer::new(&settings.kafka, settings.service_name)?;
        Ok(Self {
            settings,
            db,
            relay_db,
            producer,
            outbox_signal: OutboxSignal::default(),
            health: Health::default(),
            saga_view: false,
        })
    }

    /// Every unit of work of this service (its commands' and its consumer's) records the
    /// events it applies or publishes in the saga view ([`crate::saga_view`]).
    pub fn with_saga_view(mut self) -> Self {
        self.saga_view = true;
        self
    }

    /// Brings the service's database up to date with `M`, one instance at a time
    /// ([`db::migrate`]).
    pub async fn migrate<M: sea_orm_migration::MigratorTrait>(&self) -> Result<(), StartupError> {
        db::migrate::<M>(&self.db, self.settings.database.migration_lock_timeout).await?;
        Ok(())
    }

    /// The unit of work every use case of this service runs in.
    pub fn unit_of_work(&self) -> UnitOfWork {
        let uow = UnitOfWork::new(
            self.db.clone(),
            self.outbox_signal.clone(),
            self.settings.service_name,
        );
        if self.saga_view {
            uow.with_saga_view()
        } else {
            uow
        }
    }

    pub async fn listen(&self) -> Result<TcpListener, StartupError> {
        self.bind(self.settings.http.port).await
    }

    async fn bind(&self, port: u16) -> Result<TcpListener, StartupError> {
        let address = format!("{}:{}", self.settings.http.host, port);
        TcpListener::bind(&address)
            .await
            .map_err(|source| StartupError::Bind { address, source })
    }

    pub fn relay(&self) -> Relay {
        Relay::new(
            self.relay_db.clone(),
            self.producer.clone(),
            self.outbox_signal.clone(),
            self.settings.relay.clone(),
            self.settings.kafka.clone(),
            self.health.clone(),
        )
    }

    /// Binds the listener and subscribes the consumer: the service's `routes` (plus
    /// `/health`, `/metrics`, the operator's `/sagas/*` and the OpenAPI document with its
    /// `/docs`) and `handler` for `topics` become a runnable [`Application`].
    pub async fn application<H: EventHandler>(
        self,
        routes: OpenApiRouter,
        topics: &[&str],
        handler: H,
    ) -> Result<Application<H>, StartupError> {
        let physical: Vec<String> = topics
            .iter()
            .map(|t| self.settings.kafka.topic(t))
            .collect();
        crate::retention::check_topics(
            &self.settings.kafka,
            &physical,
            self.settings.retention.inbox,
        )
        .await?;
        let listener = self.listen().await?;
        let parking = Parking::new(self.db.clone());
        let applier = Applier {
            handler: Arc::new(handler),
            uow: self.unit_of_work(),
            parking,
        };
        let consumer = EventConsumer::subscribe(
            &self.settings.kafka,
            self.settings.consumer.clone(),
            self.settings.service_name,
            topics,
            applier.clone(),
            self.producer.clone(),
            self.health.clone(),
        )?;
        let health = HealthProbe {
            db: self.db.clone(),
            producer: self.producer.clone(),
            metadata_timeout: self.settings.kafka.metadata_timeout,
            health: self.health.clone(),
            stale_after: self.settings.http.health_stale_after,
        };
        let probe_routes = || {
            http::health_router(health.clone()).merge(http::metrics_router(
                self.settings.service_name,
                self.db.clone(),
            ))
        };
        let probes = match self.settings.http.probe_port {
            Some(port) => {
                let (router, _) = probe_routes().split_for_parts();
                // No authenticator: these routes take no `Caller`.
                Some(Probes {
                    listener: self.bind(port).await?,
                    router,
                })
            }
            None => None,
        };
        let routes = routes
            .merge(probe_routes())
            .merge(http::sagas_router(applier));
        let (router, openapi) = http::documented(routes);
        // Every route's `Caller` is checked by this one authenticator.
        let router = router.layer(axum::Extension(self.settings.auth.clone()));
        let relay = self.relay();
        let (db, retention) = (self.db.clone(), self.settings.retention);
        let inbox_retention: BackgroundTask = Box::new({
            let db = db.clone();
            move |stop| Box::pin(crate::retention::run(db, retention, stop))
        });
        let keys = crate::retention::Expiring::idempotency_keys(retention.idempotency);
        let key_retention: BackgroundTask =
            Box::new(move |stop| Box::pin(crate::retention::run_for(db, keys, retention, stop)));
        Ok(Application {
            settings: self.settings,
            listener,
            router,
            openapi,
            probes,
            relay,
            consumer,
            background: vec![inbox_retention, key_retention],
        })
    }
}

/// A built, not yet running service: migrated database, bound listener, subscribed consumer.
/// Each service's `build` function makes one; `main` and the tests run it.
pub struct Application<H> {
    pub settings: CommonSettings,
    pub listener: TcpListener,
    pub router: Router,
    /// What `router` serves, as `GET /openapi.json` gives it.
    pub openapi: utoipa::openapi::OpenApi,
    /// The second port for probes and scrapes, with `HTTP_PROBE_PORT` set.
    pub probes: Option<Probes>,
    pub relay: Relay,
    pub consumer: EventConsumer<H>,
    /// Service-specific periodic jobs (e.g. orders-svc's saga deadline), stopped with the rest.
    pub background: Vec<BackgroundTask>,
}

/// `/health/*` and `/metrics` on a port of their own, outside the main port's connection bound
/// ([`http::serve_probes`]).
pub struct Probes {
    pub listener: TcpListener,
    pub router: Router,
}

/// A job that runs until the token it is given is cancelled.
pub type BackgroundTask =
    Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

impl<H: EventHandler> Application<H> {
    /// The port actually bound, which differs from the configured one when that was 0.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(self.settings.http.port)
    }

    /// The probe port actually bound, if there is one.
    pub fn probe_port(&self) -> Option<u16> {
        let probes = self.probes.as_ref()?;
        probes.listener.local_addr().ok().map(|a| a.port())
    }

    /// Runs until `shutdown`; see [`run`].
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        run(self, shutdown).await
    }

    /// Adds a background job to run beside the HTTP server, relay and consumer.
    pub fn with_background(mut self, task: BackgroundTask) -> Self {
        self.background.push(task);
        self
    }
}

/// The whole of a service's `main`: settings from the environment, telemetry, `build`, then
/// run until SIGTERM or Ctrl-C. Start-up failures are logged and give a failing exit code.
pub async fn main<H, F, Fut>(defaults: ServiceDefaults, build: F) -> ExitCode
where
    H: EventHandler,
    F: FnOnce(CommonSettings) -> Fut,
    Fut: Future<Output = Result<Application<H>, StartupError>>,
{
    let name = defaults.service_name;
    let settings = match CommonSettings::from_env(defaults) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = match crate::telemetry::init(name) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    crate::metrics::install(name);
    if let Err(error) = crate::fault::init_from_env() {
        tracing::error!(%error, "{name}: invalid fault injection settings");
        return ExitCode::FAILURE;
    }
    let app = match build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "{name} failed to start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        port = app.port(),
        probe_port = app.probe_port(),
        "{name} listening"
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    match app.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{name} stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Runs the service until `shutdown` is cancelled, then stops in order: HTTP stops taking
/// requests, the consumer finishes the record in hand and commits, and the relay flushes.
/// `shutdown_timeout` bounds the whole of it, from the signal to the return; what has not
/// finished by then is abandoned (the outbox and Kafka's offsets make that safe).
pub async fn run<H: EventHandler>(
    app: Application<H>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Application {
        settings,
        listener,
        router,
        probes,
        relay,
        consumer,
        background,
        ..
    } = app;
    let settings = &settings;
    let mut jobs: Vec<_> = background
        .into_iter()
        .map(|task| tokio::spawn(task(shutdown.clone())))
        .collect();
    jobs.push(tokio::spawn(crate::metrics::upkeep(shutdown.clone())));
    let relay_stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
    let consumer_task = tokio::spawn(consumer.run(shutdown.clone()));
    if let Some(Probes { listener, router }) = probes {
        let (settings, shutdown) = (settings.http.clone(), shutdown.clone());
        jobs.push(tokio::spawn(async move {
            if let Err(error) = http::serve_probes(listener, router, settings, shutdown).await {
                // The main port still serves the probes; the service goes on without this one.
                tracing::error!(%error, "the probe port stopped serving");
            }
        }));
    }
    let http = http::serve(listener, router, &settings.http, shutdown.clone());
    tokio::pin!(http);
    let ended_early = tokio::select! {
        served = &mut http => Some(served),
        () = shutdown.cancelled() => None,
    };
    // The one budget for everything that follows, counted from the signal.
    let deadline = tokio::time::Instant::now() + settings.http.shutdown_timeout;
    let served = match ended_early {
        Some(served) => {
            // The server failed on its own: stop the rest as if signalled.
            shutdown.cancel();
            served
        }
        None => tokio::time::timeout_at(deadline, http)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("in-flight requests did not finish in time");
                Ok(())
            }),
    };

    if tokio::time::timeout_at(deadline, consumer_task)
        .await
        .is_err()
    {
        tracing::warn!("consumer did not stop in time");
    }
    for job in jobs {
        if tokio::time::timeout_at(deadline, job).await.is_err() {
            tracing::warn!("background job did not stop in time");
        }
    }
    // The relay stops last so that events the consumer committed while stopping go out too.
    relay_stop.cancel();
    if tokio::time::timeout_at(deadline, relay_task).await.is_err() {
        tracing::warn!("relay did not flush in time");
    }
    served
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
