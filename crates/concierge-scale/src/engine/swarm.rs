//! Docker swarm mode: the count is the service's desired replicas (`docker service inspect`),
//! scaling is `docker service scale --detach SERVICE=N`, which records the new desired count
//! at once and lets the swarm converge (a service whose tasks cannot start would otherwise
//! keep the command waiting forever).
//!
//! Resizing is `docker service update --detach --limit-cpu --limit-memory`: the limits live
//! in the service's task template, so the swarm replaces the tasks (a rolling update) and every
//! task it starts later has them.

use super::{
    clip, flag, parse_count, run_ok, DockerOptions, Engine, EngineError, Invocation, Limits,
    Resources, Runner,
};
use crate::resources::{cpus_text, memory_text};

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

impl Swarm {
    /// The task template's resources, as JSON (`null` when none were ever set).
    pub fn resources_invocation(&self, service: &str) -> Invocation {
        self.docker.docker().args([
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.Resources}}",
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

    fn resources(&self, runner: &dyn Runner, service: &str) -> Result<Resources, EngineError> {
        let inv = self.resources_invocation(service);
        let out = run_ok(runner, &inv)?;
        let v: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).map_err(|e| EngineError::Unexpected {
                command: inv.to_string(),
                output: clip(&out.stdout),
                why: format!("expected the task template's resources as JSON: {e}"),
            })?;
        let limit = |name: &str| match &v["Limits"][name] {
            serde_json::Value::Null => Some(0),
            n => n.as_u64(),
        };
        Ok(Resources {
            limits: Limits {
                nano_cpus: limit("NanoCPUs"),
                memory: limit("MemoryBytes"),
            },
            ..Resources::default()
        })
    }

    fn resize_invocation(
        &self,
        service: &str,
        to: &Limits,
        _now: &Resources,
    ) -> Option<Invocation> {
        let mut inv = self.docker.docker().args(["service", "update", "--detach"]);
        if let Some(c) = to.nano_cpus {
            inv = inv.arg(flag("--limit-cpu", cpus_text(c)));
        }
        if let Some(m) = to.memory {
            inv = inv.arg(flag("--limit-memory", memory_text(m)));
        }
        Some(inv.args(["--", service]))
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
    fn resize_updates_the_task_template() {
        let s = swarm();
        let to = Limits {
            nano_cpus: Some(250_000_000),
            memory: Some(64 << 20),
        };
        assert_eq!(
            s.resize_invocation("web", &to, &Resources::default())
                .unwrap()
                .argv(),
            [
                "/usr/bin/docker",
                "--context=lab",
                "service",
                "update",
                "--detach",
                "--limit-cpu=0.25",
                "--limit-memory=64m",
                "--",
                "web"
            ]
        );
        let r = Scripted::new(vec![ok(
            "{\"Limits\":{\"NanoCPUs\":500000000,\"MemoryBytes\":134217728},\"Reservations\":{}}\n",
        )]);
        let now = s.resources(&r, "web").unwrap();
        assert_eq!(
            now.limits,
            Limits {
                nano_cpus: Some(500_000_000),
                memory: Some(128 << 20)
            }
        );
        assert_eq!(
            r.seen_args()[0][2..6],
            [
                "service",
                "inspect",
                "--format",
                "{{json .Spec.TaskTemplate.Resources}}"
            ]
        );
        // Never set: null, or limits without memory.
        for (json, want) in [
            ("null", (0, 0)),
            ("{\"Limits\":{\"NanoCPUs\":1000000000}}", (1_000_000_000, 0)),
        ] {
            let r = Scripted::new(vec![ok(json)]);
            let l = s.resources(&r, "web").unwrap().limits;
            assert_eq!(
                (l.nano_cpus, l.memory),
                (Some(want.0), Some(want.1)),
                "{json}"
            );
        }
        let r = Scripted::new(vec![ok("<no value>")]);
        assert!(matches!(
            s.resources(&r, "web"),
            Err(EngineError::Unexpected { .. })
        ));
        assert!(s.limits_follow_new_containers());
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
