//! Kubernetes through kubectl: the count is `.spec.replicas` of the workload (`kubectl get …
//! -o jsonpath`), scaling is `kubectl scale … --replicas=N`, with `--current-replicas` set to
//! the count just read so a change made meanwhile by someone else fails instead of being
//! overwritten.
//!
//! SERVICE is `NAME` (a Deployment) or `TYPE/NAME` (`statefulset/db`, `deployments.apps/web`).

use std::ffi::OsString;
use std::path::PathBuf;

use super::{flag, parse_count, run_ok, Engine, EngineError, Invocation, Runner, ServiceNameError};

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
