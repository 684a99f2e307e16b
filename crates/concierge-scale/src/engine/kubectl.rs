//! Kubernetes through kubectl: the count is `.spec.replicas` of the workload (`kubectl get …
//! -o jsonpath`), scaling is `kubectl scale … --replicas=N`, with `--current-replicas` set to
//! the count just read so a change made meanwhile by someone else fails instead of being
//! overwritten.
//!
//! SERVICE is `NAME` (a Deployment) or `TYPE/NAME` (`statefulset/db`, `deployments.apps/web`).
//!
//! Resizing is `kubectl set resources TYPE/NAME --limits=cpu=…,memory=…` (every container of
//! the pod template; the workload rolls its pods); the limits are read back from the pod
//! template's containers.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{
    flag, parse_count, run_ok, Engine, EngineError, Invocation, Limits, Resources, Runner,
    ServiceNameError,
};
use crate::resources::{kube_cpu, kube_memory, parse_kube_cpu, parse_kube_memory};

/// The workload type when SERVICE names none.
pub const DEFAULT_TYPE: &str = "deployment";

/// A kubectl engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubectl {
    /// The kubectl program.
    pub kubectl: OsString,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

impl Default for Kubectl {
    fn default() -> Self {
        Self {
            kubectl: "kubectl".into(),
            kubeconfig: None,
            context: None,
            namespace: None,
        }
    }
}

/// Check `NAME` or `TYPE/NAME`: TYPE in lower-case letters, digits and dots; NAME a DNS-1123
/// subdomain (lower-case letters, digits, '-' and '.', starting and ending alphanumeric).
pub fn validate_resource(service: &str) -> Result<(), ServiceNameError> {
    let err = |reason: &str| ServiceNameError {
        name: service.to_string(),
        reason: reason.to_string(),
    };
    if service.starts_with('-') {
        return Err(err("it looks like an option"));
    }
    let (kind, name) = match service.split_once('/') {
        Some((k, n)) => (Some(k), n),
        None => (None, service),
    };
    if let Some(k) = kind {
        let ok = k.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.');
        if !ok {
            return Err(err(
                "the type before '/' must be lower-case letters, digits and dots",
            ));
        }
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.first().copied().is_some_and(alnum)
        && bytes.last().copied().is_some_and(alnum)
        && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.');
    if !ok {
        return Err(err(
            "a Kubernetes name is 1-253 lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

impl Kubectl {
    /// `TYPE/NAME` for SERVICE.
    pub fn resource(service: &str) -> String {
        if service.contains('/') {
            service.to_string()
        } else {
            format!("{DEFAULT_TYPE}/{service}")
        }
    }

    /// kubectl with the global options.
    pub fn base(&self) -> Invocation {
        let mut a: Vec<OsString> = Vec::new();
        if let Some(k) = &self.kubeconfig {
            a.push(flag("--kubeconfig", k));
        }
        if let Some(c) = &self.context {
            a.push(flag("--context", c));
        }
        if let Some(n) = &self.namespace {
            a.push(flag("--namespace", n));
        }
        Invocation::new(&self.kubectl).args(a)
    }

    pub fn get_invocation(&self, service: &str) -> Invocation {
        self.base().args([
            "get",
            &Self::resource(service),
            "--output",
            "jsonpath={.spec.replicas}",
        ])
    }
}

impl Kubectl {
    /// Each container's CPU and memory limits, `CPU MEMORY` a line (empty where none).
    pub fn limits_invocation(&self, service: &str) -> Invocation {
        self.base().args([
            "get",
            &Self::resource(service),
            "--output",
            "jsonpath={range .spec.template.spec.containers[*]}{.resources.limits.cpu}\
             {\"|\"}{.resources.limits.memory}{\"\\n\"}{end}",
        ])
    }
}

/// The one value of a limit across the containers, if they agree and it parses.
fn agreed(values: &[Option<u64>]) -> Option<u64> {
    let first = values.first().copied().flatten()?;
    values.iter().all(|v| *v == Some(first)).then_some(first)
}

impl Engine for Kubectl {
    fn name(&self) -> &'static str {
        "kubectl"
    }

    fn current(&self, runner: &dyn Runner, service: &str) -> Result<u32, EngineError> {
        let inv = self.get_invocation(service);
        let out = run_ok(runner, &inv)?;
        parse_count(&inv, &out.stdout)
    }

    fn scale_invocation(&self, service: &str, to: u32, from: Option<u32>) -> Invocation {
        let mut inv = self.base().args(["scale", &Self::resource(service)]);
        if let Some(f) = from {
            inv = inv.arg(format!("--current-replicas={f}"));
        }
        inv.arg(format!("--replicas={to}"))
    }

    fn resources(&self, runner: &dyn Runner, service: &str) -> Result<Resources, EngineError> {
        let out = run_ok(runner, &self.limits_invocation(service))?;
        let (mut cpus, mut mems) = (Vec::new(), Vec::new());
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let (c, m) = line.split_once('|').unwrap_or((line, ""));
            cpus.push(parse_kube_cpu(c));
            mems.push(parse_kube_memory(m));
        }
        let limits = Limits {
            nano_cpus: agreed(&cpus),
            memory: agreed(&mems),
        };
        let note = (limits.nano_cpus.is_none() || limits.memory.is_none()).then(|| {
            format!(
                "the limits of the {} containers differ or were not understood: {:?}",
                cpus.len(),
                out.stdout.trim()
            )
        });
        Ok(Resources {
            limits,
            note,
            ..Resources::default()
        })
    }

    fn resize_invocation(
        &self,
        service: &str,
        to: &Limits,
        _now: &Resources,
    ) -> Option<Invocation> {
        let mut limits = Vec::new();
        if let Some(c) = to.nano_cpus {
            limits.push(format!("cpu={}", kube_cpu(c)));
        }
        if let Some(m) = to.memory {
            limits.push(format!("memory={}", kube_memory(m)));
        }
        Some(self.base().args([
            "set",
            "resources",
            &Self::resource(service),
            &flag("--limits", limits.join(",")).to_string_lossy(),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fail, ok, Scripted};
    use super::*;

    fn kube() -> Kubectl {
        Kubectl {
            kubectl: "/usr/bin/kubectl".into(),
            kubeconfig: Some("/etc/kube/config".into()),
            context: Some("lab".into()),
            namespace: Some("shop".into()),
        }
    }

    const GLOBAL: [&str; 4] = [
        "/usr/bin/kubectl",
        "--kubeconfig=/etc/kube/config",
        "--context=lab",
        "--namespace=shop",
    ];

    #[test]
    fn scale_argv_with_precondition() {
        let mut want = GLOBAL.to_vec();
        want.extend([
            "scale",
            "deployment/web",
            "--current-replicas=2",
            "--replicas=3",
        ]);
        assert_eq!(kube().scale_invocation("web", 3, Some(2)).argv(), want);
        // A count that came from the caller's hint is no precondition.
        assert_eq!(
            Kubectl::default()
                .scale_invocation("statefulset/db", 0, None)
                .argv(),
            ["kubectl", "scale", "statefulset/db", "--replicas=0"]
        );
    }

    #[test]
    fn replicas_come_from_jsonpath() {
        let r = Scripted::new(vec![ok("4")]);
        assert_eq!(kube().current(&r, "web").unwrap(), 4);
        let mut want = GLOBAL.to_vec();
        want.extend([
            "get",
            "deployment/web",
            "--output",
            "jsonpath={.spec.replicas}",
        ]);
        assert_eq!(r.seen_args(), [want]);
        // A workload without replicas (a DaemonSet, say) prints nothing.
        let r = Scripted::new(vec![ok("")]);
        assert!(matches!(
            kube().current(&r, "daemonset/x"),
            Err(EngineError::Unexpected { .. })
        ));
        let r = Scripted::new(vec![fail(
            1,
            "Error from server (NotFound): deployments.apps \"web\" not found\n",
        )]);
        let e = kube().current(&r, "web").unwrap_err();
        assert!(e.to_string().contains("NotFound"), "{e}");
    }

    #[test]
    fn resize_is_set_resources() {
        let to = Limits {
            nano_cpus: Some(500_000_000),
            memory: Some(256 << 20),
        };
        let mut want = GLOBAL.to_vec();
        want.extend([
            "set",
            "resources",
            "deployment/web",
            "--limits=cpu=500m,memory=256Mi",
        ]);
        assert_eq!(
            kube()
                .resize_invocation("web", &to, &Resources::default())
                .unwrap()
                .argv(),
            want
        );
        let cpus = Limits {
            nano_cpus: Some(2_000_000_000),
            memory: None,
        };
        assert_eq!(
            Kubectl::default()
                .resize_invocation("statefulset/db", &cpus, &Resources::default())
                .unwrap()
                .argv(),
            [
                "kubectl",
                "set",
                "resources",
                "statefulset/db",
                "--limits=cpu=2"
            ]
        );
    }

    #[test]
    fn limits_come_from_the_pod_template() {
        let r = Scripted::new(vec![ok("500m|256Mi\n500m|256Mi\n")]);
        let now = kube().resources(&r, "web").unwrap();
        assert_eq!(
            now.limits,
            Limits {
                nano_cpus: Some(500_000_000),
                memory: Some(256 << 20)
            }
        );
        assert_eq!(now.note, None);
        let argv = &r.seen_args()[0];
        assert_eq!(argv[4..7], ["get", "deployment/web", "--output"]);
        assert_eq!(
            argv[7],
            "jsonpath={range .spec.template.spec.containers[*]}{.resources.limits.cpu}\
             {\"|\"}{.resources.limits.memory}{\"\\n\"}{end}"
        );
        // No limits: 0; containers that differ: not known.
        let r = Scripted::new(vec![ok("|\n")]);
        let l = kube().resources(&r, "web").unwrap().limits;
        assert_eq!((l.nano_cpus, l.memory), (Some(0), Some(0)));
        let r = Scripted::new(vec![ok("1|1Gi\n2|1Gi\n")]);
        let now = kube().resources(&r, "web").unwrap();
        assert_eq!(
            (now.limits.nano_cpus, now.limits.memory),
            (None, Some(1 << 30))
        );
        assert!(now.note.unwrap().contains("differ"));
    }

    #[test]
    fn resource_names() {
        for good in [
            "web",
            "deployment/web",
            "deployments.apps/web-1",
            "a.b",
            "0",
        ] {
            assert!(validate_resource(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "--help",
            "-f/etc/x",
            "Web",
            "web-",
            "/web",
            "deployment/",
            "a/b/c",
            "a_b",
            "Deploy/web",
            "web;ls",
        ] {
            assert!(validate_resource(bad).is_err(), "{bad:?}");
        }
    }
}
