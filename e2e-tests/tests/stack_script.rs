//! `deploy/stack`'s instance commands, run as an operator runs them: `scale` to two instances
//! of payments-svc, `status` listing each with its port and pid, `kill`, `start` and `stop`
//! on one instance or on all, and a bad instance refused.
//!
//! The instances run the debug binaries that `deploy/stack test` built, on ports of their own,
//! with their pid files and logs in a state folder of their own, consuming topics of their
//! own (`KAFKA_TOPIC_PREFIX`, which the script passes on), and on payments' real database, as
//! `scale` starts them.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use e2e_tests::stack::{every_topic_behind_a_fresh_prefix, run_of};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Script {
    state: PathBuf,
    port: u16,
    prefix: String,
}

impl Script {
    async fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/stack");
        tokio::process::Command::new(script)
            .args(args)
            .env("STACK_STATE_DIR", &self.state)
            .env("STACK_PROFILE", "debug")
            .env("PAYMENTS_PORT", self.port.to_string())
            // The script's base port: orders' server, which in either layout is PG_PORT.
            .env(
                "PG_PORT",
                saga_runtime::testing::pg_port_of("orders").to_string(),
            )
            .env("KAFKA_TOPIC_PREFIX", &self.prefix)
            .env("KAFKA_GROUP_ID", format!("{}payments-svc", self.prefix))
            .output()
            .await
    }

    /// Runs `args`, which must succeed, and returns what it printed.
    async fn ok(&self, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
        let output = self.run(args).await?;
        if !output.status.success() {
            return Err(format!(
                "deploy/stack {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `status`'s line for `label`, its words.
    async fn status_of(&self, label: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let status = self.ok(&["status"]).await?;
        status
            .lines()
            .map(|line| {
                line.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .find(|words| words.first().is_some_and(|w| w == label))
            .ok_or_else(|| format!("no {label} in status:\n{status}").into())
    }
}

/// A port that is free, with the one 100 above it free too (instance 2's).
fn free_port_pair() -> std::io::Result<u16> {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX - 100 && std::net::TcpListener::bind(("127.0.0.1", port + 100)).is_ok() {
            return Ok(port);
        }
    }
}

async fn ready(port: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/health/ready"))
        .await
        .is_ok_and(|response| response.status().is_success())
}

#[tokio::test]
async fn scale_status_kill_start_and_stop_act_on_each_instance() -> TestResult {
    let prefix = every_topic_behind_a_fresh_prefix()
        .await
        .map_err(|e| e.to_string())?;
    let state = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/e2e-stack-script")
        .join(run_of(&prefix));
    std::fs::create_dir_all(&state)?;
    let script = Script {
        state,
        port: free_port_pair()?,
        prefix,
    };
    let (first, second) = (script.port, script.port + 100);

    let scaled = script.ok(&["scale", "payments-svc", "2"]).await;
    let outcome = async {
        scaled?;
        let one = script.status_of("payments-svc").await?;
        let two = script.status_of("payments-svc/2").await?;
        assert_eq!(one.get(1).map(String::as_str), Some("running"), "{one:?}");
        assert_eq!(two.get(1).map(String::as_str), Some("running"), "{two:?}");
        assert_eq!(one.get(2), Some(&format!("127.0.0.1:{first}")), "{one:?}");
        assert_eq!(two.get(2), Some(&format!("127.0.0.1:{second}")), "{two:?}");
        assert!(
            one.get(3) == Some(&"pid".to_owned())
                && two.get(4).is_some_and(|p| p.parse::<u32>().is_ok()),
            "each running instance shows its pid: {one:?} {two:?}"
        );
        assert!(
            ready(first).await && ready(second).await,
            "both instances ready"
        );

        script.ok(&["kill", "payments-svc/2"]).await?;
        // A SIGKILLed process may take a moment to be reaped.
        let mut stopped = false;
        for _ in 0..50 {
            if script
                .status_of("payments-svc/2")
                .await?
                .get(1)
                .map(String::as_str)
                == Some("stopped")
            {
                stopped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(stopped, "payments-svc/2 stopped after kill");
        assert!(
            ready(first).await,
            "instance 1 untouched by killing instance 2"
        );

        script.ok(&["start", "payments-svc/2"]).await?;
        assert!(ready(second).await, "instance 2 ready again after start");

        let refused = script.run(&["start", "payments-svc/x"]).await?;
        assert!(!refused.status.success(), "a bad instance is refused");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("bad instance"),
            "and named: {}",
            String::from_utf8_lossy(&refused.stderr)
        );

        script.ok(&["stop", "payments-svc"]).await?;
        for label in ["payments-svc", "payments-svc/2"] {
            let line = script.status_of(label).await?;
            assert_eq!(line.get(1).map(String::as_str), Some("stopped"), "{line:?}");
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    // Whatever happened, leave no instance running.
    let _ = script.run(&["stop", "payments-svc"]).await;
    outcome
}
