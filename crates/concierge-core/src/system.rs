//! Facts about the machine the tools run on.

use std::fs;

/// The system host name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`), the agent's
/// fallback when `Hostname` is not configured.
pub fn hostname() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

/// True when `name` is a valid Zabbix host technical name: 1-128 of `[0-9A-Za-z ._-]`.
pub fn is_valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b'_' | b'-'))
}

/// The id of the container this process runs in, read from `/proc/self/mountinfo` (Docker
/// bind-mounts `/etc/hostname` from `/var/lib/docker/containers/<id>/`) or, on cgroup v1, from
/// `/proc/self/cgroup`. `None` outside a container.
pub fn container_id() -> Option<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    container_id_from(&mountinfo, &cgroup)
}

fn container_id_from(mountinfo: &str, cgroup: &str) -> Option<String> {
    let from_mounts = mountinfo.lines().find_map(|line| {
        let rest = &line[line.find("/containers/")? + "/containers/".len()..];
        let id = rest.split('/').next()?;
        let tail = &rest[id.len()..];
        (tail.starts_with("/hostname")
            || tail.starts_with("/resolv.conf")
            || tail.starts_with("/hosts"))
        .then_some(id)
        .filter(|id| is_container_id(id))
    });
    let from_cgroup = || {
        cgroup.lines().find_map(|line| {
            line.rsplit(['/', '-'])
                .map(|seg| seg.trim_end_matches(".scope"))
                .find(|seg| is_container_id(seg))
        })
    };
    from_mounts.or_else(from_cgroup).map(str::to_string)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A host name unique to this container: the system host name, extended with the short
/// container id when the two differ (with `network_mode: host` every container shares the
/// machine's host name, so the name alone would make them one Zabbix host).
pub fn instance_name() -> Option<String> {
    let host = hostname();
    match (host, container_id()) {
        (Some(h), Some(id)) => Some(unique_name(&h, &id)),
        (h, None) => h,
        (None, Some(id)) => Some(id[..12].to_string()),
    }
}

fn unique_name(host: &str, id: &str) -> String {
    let short = &id[..12];
    if host.starts_with(short) {
        host.to_string()
    } else {
        let room = 128 - short.len() - 1;
        let host: String = host.chars().take(room).collect();
        format!("{host}-{short}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert!(is_valid_host_name("concierge-lab"));
        assert!(is_valid_host_name("My host_1.x"));
        assert!(!is_valid_host_name(""));
        assert!(!is_valid_host_name("a/b"));
        assert!(!is_valid_host_name(&"a".repeat(129)));
        assert!(hostname().is_some());
    }

    const ID: &str = "6fb01f66ca56a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a";

    #[test]
    fn container_ids_from_docker_mounts_and_cgroups() {
        let mountinfo = format!(
            "620 600 0:50 / / rw - overlay overlay rw\n\
             631 620 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id_from(&mountinfo, "").as_deref(), Some(ID));
        let cgroup_v1 = format!("12:pids:/docker/{ID}\n");
        assert_eq!(container_id_from("", &cgroup_v1).as_deref(), Some(ID));
        let systemd = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_id_from("", &systemd).as_deref(), Some(ID));
        assert_eq!(
            container_id_from("1 0 0:1 / / rw - ext4 x rw\n", "0::/init.scope\n"),
            None
        );
    }

    #[test]
    fn instance_names_are_unique_and_valid() {
        assert_eq!(unique_name("buildhost", ID), "buildhost-6fb01f66ca56");
        assert_eq!(unique_name("6fb01f66ca56", ID), "6fb01f66ca56");
        let long = unique_name(&"h".repeat(200), ID);
        assert_eq!(long.len(), 128);
        assert!(is_valid_host_name(&long));
    }
}
