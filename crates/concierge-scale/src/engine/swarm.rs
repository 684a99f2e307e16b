//! Docker swarm mode: the count is the service's desired replicas (`docker service inspect`),
//! scaling is `docker service scale --detach SERVICE=N`, which records the new desired count
//! at once and lets the swarm converge (a service whose tasks cannot start would otherwise
//! keep the command waiting forever).

use super::{parse_count, run_ok, DockerOptions, Engine, EngineError, Invocation, Runner};

/// What `service inspect` prints for a service in global mode.
const GLOBAL: &str = "global";

/// A swarm engine.
#[derive(Debug, Clone)]
pub struct Swarm {
    pub docker: DockerOptions,
}

impl Swarm {
    /// Prints the desired replicas, or `global` for a global-mode service.
    pub fn inspect_invocation(&self, service: &str) -> Invocation {
        self.docker.docker().args([
            "service",
            "inspect",
            "--format",
            "{{if .Spec.Mode.Replicated}}{{.Spec.Mode.Replicated.Replicas}}{{else}}global{{end}}",
            "--",
            service,
        ])
    }
}

impl Engine for Swarm {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn current(&self, runner: &dyn Runner, service: &str) -> Result<u32, EngineError> {
        let inv = self.inspect_invocation(service);
        let out = run_ok(runner, &inv)?;
        if out.stdout.trim() == GLOBAL {
            return Err(EngineError::Unexpected {
                command: inv.to_string(),
                output: GLOBAL.into(),
                why: "a global-mode service runs one task per node and cannot be scaled".into(),
            });
        }
        parse_count(&inv, &out.stdout)
    }

    fn scale_invocation(&self, service: &str, to: u32, _from: Option<u32>) -> Invocation {
        self.docker.docker().args([
            "service",
            "scale",
            "--detach",
            "--",
            &format!("{service}={to}"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fail, ok, Scripted};
    use super::*;

    fn swarm() -> Swarm {
        Swarm {
            docker: DockerOptions {
                docker: "/usr/bin/docker".into(),
                context: Some("lab".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn scale_argv() {
        assert_eq!(
            swarm().scale_invocation("web", 4, Some(3)).argv(),
            [
                "/usr/bin/docker",
                "--context=lab",
                "service",
                "scale",
                "--detach",
                "--",
                "web=4"
            ]
        );
    }

    #[test]
    fn replicas_come_from_service_inspect() {
        let s = swarm();
        let r = Scripted::new(vec![ok("3\n")]);
        assert_eq!(s.current(&r, "web").unwrap(), 3);
        let argv = &r.seen_args()[0];
        assert_eq!(argv[2..5], ["service", "inspect", "--format"]);
        assert_eq!(argv[argv.len() - 2..], ["--", "web"]);
        let r = Scripted::new(vec![ok("global\n")]);
        let e = s.current(&r, "web").unwrap_err();
        assert!(e.to_string().contains("global-mode"), "{e}");
        let r = Scripted::new(vec![fail(1, "Error: no such service: web\n")]);
        assert!(matches!(
            s.current(&r, "web"),
            Err(EngineError::Failed { .. })
        ));
    }
}
