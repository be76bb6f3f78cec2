//! The Helm chart in `deploy/helm/saga`, validated offline: `helm lint --strict`, then
//! `helm template` parsed and checked for what the cluster relies on (probes, grace period,
//! where configuration and secrets come from, disruption budgets, and autoscalers capped by the
//! partition count). `deploy/stack test` builds helm into `deploy/.cache/bin`; `HELM` names
//! another binary.

use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;
use shared_events::topics::PARTITIONS;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SERVICES: [(&str, u64); 3] = [
    ("orders-svc", 8081),
    ("payments-svc", 8082),
    ("inventory-svc", 8083),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    root().join("deploy/helm/saga")
}

fn helm(args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let binary = std::env::var("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("deploy/.cache/bin/helm"));
    if !binary.exists() {
        return Err(format!(
            "{} is missing: deploy/stack test builds it (or set HELM)",
            binary.display()
        )
        .into());
    }
    let output = Command::new(&binary).args(args).output()?;
    if !output.status.success() {
        return Err(format!(
            "helm {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The rendered objects, with `sets` as `--set` overrides.
fn render(sets: &[&str]) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let chart = chart();
    let mut args = vec!["template", "t", chart.to_str().ok_or("path")?];
    for set in sets {
        args.extend(["--set", set]);
    }
    let rendered = helm(&args)?;
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&rendered) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

use serde::Deserialize;

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, service: &str) -> Result<&'a Value, String> {
    of_kind(objects, kind)
        .into_iter()
        .find(|o| o["metadata"]["name"] == format!("t-{service}").as_str())
        .ok_or_else(|| format!("no {kind} for {service}"))
}

#[test]
fn the_chart_passes_helm_lint() -> TestResult {
    let chart = chart();
    helm(&["lint", "--strict", chart.to_str().ok_or("path")?])?;
    Ok(())
}

#[test]
fn each_service_is_a_deployment_with_probes_config_and_secret() -> TestResult {
    let objects = render(&[])?;
    assert_eq!(of_kind(&objects, "Deployment").len(), 3);
    let auth = of_kind(&objects, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "t-auth")
        .ok_or("no t-auth secret")?;
    assert!(auth["stringData"]["AUTH_JWT_SECRET"].is_string());
    for (service, port) in SERVICES {
        let deployment = named(&objects, "Deployment", service)?;
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["ports"][0]["containerPort"], port, "{service}");
        // The probes go to the probe port, which answers while the service port is at its
        // connection bound.
        assert_eq!(container["ports"][1]["name"], "probes", "{service}");
        assert_eq!(container["ports"][1]["containerPort"], 8090, "{service}");
        for (probe, path) in [
            ("livenessProbe", "/health/live"),
            ("readinessProbe", "/health/ready"),
            ("startupProbe", "/health/live"),
        ] {
            assert_eq!(container[probe]["httpGet"]["path"], path, "{service}");
            assert_eq!(container[probe]["httpGet"]["port"], "probes", "{service}");
        }
        assert!(
            container["resources"]["requests"]["cpu"].is_string(),
            "{service} requests CPU"
        );
        let env = container["env"].as_sequence().ok_or("no env")?;
        let database = env
            .iter()
            .find(|e| e["name"] == "DATABASE_URL")
            .ok_or("no DATABASE_URL")?;
        let secret = &database["valueFrom"]["secretKeyRef"];
        assert_eq!(secret["key"], "DATABASE_URL", "{service}");
        let secret_name = secret["name"].as_str().ok_or("no secret name")?;
        assert!(
            of_kind(&objects, "Secret")
                .iter()
                .any(|s| s["metadata"]["name"] == secret_name),
            "{service}'s secret {secret_name} is rendered"
        );
        let config = container["envFrom"][0]["configMapRef"]["name"]
            .as_str()
            .ok_or("no configMapRef")?;
        assert_eq!(config, format!("t-{service}"));
        let config_map = named(&objects, "ConfigMap", service)?;
        assert_eq!(config_map["data"]["HTTP_PORT"], port.to_string().as_str());
        assert_eq!(config_map["data"]["HTTP_PROBE_PORT"], "8090", "{service}");
        assert!(
            config_map["data"].get("DATABASE_URL").is_none(),
            "the database URL is a secret, not configuration"
        );
        let auth = container["envFrom"][1]["secretRef"]["name"]
            .as_str()
            .ok_or("no secretRef for the token key")?;
        assert_eq!(auth, "t-auth", "{service}");
        assert!(
            config_map["data"].get("AUTH_JWT_SECRET").is_none(),
            "the token key is a secret, not configuration"
        );
        assert!(named(&objects, "Service", service).is_ok());
        assert!(named(&objects, "PodDisruptionBudget", service).is_ok());
    }
    Ok(())
}

#[test]
fn the_grace_period_outlasts_the_services_shutdown() -> TestResult {
    for (timeout_ms, sets) in [(20_000, vec![]), (60_000, vec!["shutdownTimeoutMs=60000"])] {
        let objects = render(&sets)?;
        for deployment in of_kind(&objects, "Deployment") {
            let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .ok_or("no grace period")?;
            assert!(
                grace * 1000 > timeout_ms,
                "grace {grace}s for {timeout_ms} ms"
            );
        }
        let config = of_kind(&objects, "ConfigMap");
        assert!(
            config
                .iter()
                .all(|c| c["data"]["SHUTDOWN_TIMEOUT_MS"] == timeout_ms.to_string().as_str()),
            "the services get the same budget"
        );
    }
    Ok(())
}

#[test]
fn autoscalers_never_go_past_the_partition_count() -> TestResult {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml"))?)?;
    assert_eq!(
        values["kafka"]["partitions"],
        i64::from(PARTITIONS),
        "the chart's partition count is shared_events::topics::PARTITIONS"
    );
    let objects = render(&["services.payments-svc.autoscaling.maxReplicas=50"])?;
    assert_eq!(of_kind(&objects, "HorizontalPodAutoscaler").len(), 3);
    let payments = named(&objects, "HorizontalPodAutoscaler", "payments-svc")?;
    assert_eq!(payments["spec"]["maxReplicas"], i64::from(PARTITIONS));
    for hpa in of_kind(&objects, "HorizontalPodAutoscaler") {
        let max = hpa["spec"]["maxReplicas"]
            .as_i64()
            .ok_or("no maxReplicas")?;
        assert!(max <= i64::from(PARTITIONS), "{max}");
    }
    // Without an autoscaler, the Deployment carries the replica count itself.
    let fixed = render(&["services.orders-svc.autoscaling.enabled=false"])?;
    assert_eq!(
        named(&fixed, "Deployment", "orders-svc")?["spec"]["replicas"],
        2
    );
    assert!(named(&fixed, "HorizontalPodAutoscaler", "orders-svc").is_err());
    Ok(())
}
