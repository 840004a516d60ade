//! The deployment files agree with the daemon: the StatefulSet's environment, fed to the
//! daemon's own configuration loader, is a valid cluster configuration on PostgreSQL whose
//! ports are the containers' ports; every variable it sets is one the daemon reads; the probes
//! name routes a running daemon answers; the headless Service carries the seeds' DNS names;
//! the Dockerfile builds with the cluster feature and exposes the same ports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aios_runtime::StoreBackend;
use aios_runtime::daemon::{Daemon, DaemonConfig};
use serde::Deserialize;
use serde_json::Value;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a multi-document YAML file, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_manifests_and_the_dockerfile_match_the_daemon() {
    let docs = documents(&deploy("k8s/aiosd.yaml"));
    let sts = find(&docs, "StatefulSet", "aiosd");
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let ports: BTreeMap<String, u16> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap(),
            )
        })
        .collect();

    // The environment as Kubernetes would give it to pod aiosd-1, secrets filled in.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut secrets = BTreeSet::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = var["value"].as_str() {
            v.replace("$(POD_NAME)", "aiosd-1")
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            "aiosd-1".to_string()
        } else {
            let secret = &var["valueFrom"]["secretKeyRef"];
            assert_eq!(secret["name"], "aiosd", "{var}");
            secrets.insert(secret["key"].as_str().unwrap().to_string());
            match secret["key"].as_str().unwrap() {
                "cluster-secret" => "0123456789abcdef0123456789abcdef".into(),
                "postgres-url" => "postgres://aios:pw@postgres:5432/aios".into(),
                // Optional: a pod without it gets no variable.
                "admin-key" => continue,
                other => panic!("unknown secret key {other}"),
            }
        };
        env.insert(name, value);
    }
    // The example Secret has every key the StatefulSet takes (admin-key is optional).
    let example = documents(&deploy("k8s/secret.example.yaml"));
    let example = find(&example, "Secret", "aiosd");
    for key in &secrets {
        assert!(
            key == "admin-key" || example["stringData"][key].is_string(),
            "secret.example.yaml lacks {key}"
        );
    }

    // The daemon's own loader reads this environment into a valid configuration.
    let asked = std::sync::Mutex::new(BTreeSet::new());
    let config = DaemonConfig::load(
        None,
        |k| {
            asked.lock().unwrap().insert(k.to_string());
            env.get(k).cloned()
        },
        None,
        None,
    )
    .expect("the manifest's environment is a valid configuration");
    let asked = asked.into_inner().unwrap();
    for name in env.keys() {
        let read_by_binary = name == "AIOS_ADMIN_KEY"
            && include_str!("../../src/bin/aiosd.rs").contains("\"AIOS_ADMIN_KEY\"");
        let helper = name == "POD_NAME";
        assert!(
            asked.contains(name) || read_by_binary || helper,
            "{name} is set by the manifest but the daemon never reads it"
        );
    }
    assert_eq!(config.listen.port(), ports["http"]);
    assert!(
        config.listen.ip().is_unspecified(),
        "reachable from other pods"
    );
    let cluster_listen = config.cluster.listen.expect("cluster on");
    assert_eq!(cluster_listen.port(), ports["cluster"]);
    assert_eq!(config.store.backend, StoreBackend::Postgres);
    assert_eq!(config.store.node, "aiosd-1");
    assert_eq!(
        config.cluster.advertised().as_deref(),
        Some(format!("aiosd-1.aiosd:{}", ports["cluster"]).as_str())
    );
    // Seeds are pods of this StatefulSet behind its headless Service, on the cluster port.
    let service = sts["spec"]["serviceName"].as_str().unwrap();
    let headless = find(&docs, "Service", service);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    for seed in &config.cluster.seeds {
        let (host, port) = seed.rsplit_once(':').unwrap();
        assert_eq!(port.parse::<u16>().unwrap(), ports["cluster"], "{seed}");
        let (pod_name, svc) = host.split_once('.').unwrap();
        assert_eq!(svc, service, "{seed}");
        let ordinal: u32 = pod_name.strip_prefix("aiosd-").unwrap().parse().unwrap();
        assert!(
            u64::from(ordinal) < sts["spec"]["replicas"].as_u64().unwrap(),
            "{seed}"
        );
    }
    for p in headless["spec"]["ports"].as_array().unwrap() {
        let target = p["targetPort"].as_str().unwrap();
        assert!(ports.contains_key(target), "service port {p}");
    }
    // Graceful stop fits in the pod's grace period.
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap()
            > config.shutdown_drain.as_secs() + 10
    );

    // The probes name routes a running daemon answers.
    let probes = [
        (&container["readinessProbe"]["httpGet"], "/readyz"),
        (&container["livenessProbe"]["httpGet"], "/healthz"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let local = DaemonConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..DaemonConfig::default()
    };
    let (daemon, _) = Daemon::start(local, None).await.expect("start");
    for (probe, path) in probes {
        assert_eq!(probe["path"], path);
        assert_eq!(probe["port"], "http");
        let r = reqwest::get(format!("http://{}{path}", daemon.addr))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    daemon.shutdown().await.unwrap();

    // The image: built with the cluster feature, the same ports, aiosd as its entry point.
    let dockerfile = deploy("Dockerfile");
    assert!(dockerfile.contains("--features cluster"));
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    assert_eq!(
        exposed,
        BTreeSet::from([ports["http"], ports["cluster"]]),
        "EXPOSE"
    );
    assert!(dockerfile.contains(&format!("AIOS_LISTEN=0.0.0.0:{}", ports["http"])));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/aiosd\"]"));
}
