//! A step's container: volumes and mounts, resources, pull policy, devices, ports and the
//! other Docker options.

use super::*;

impl Decoder<'_> {
    /// Pipeline-level volumes (Drone): `{name, host: {path}}` or `{name, temp: {medium}}`.
    pub(super) fn volumes(&mut self, node: &Node, path: &At<'_>) -> Vec<Volume> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of volumes");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let Some(mut f) = self.fields(item, &item_path) else {
                continue;
            };
            let name = f
                .get("name")
                .and_then(|n| self.text(n, &item_path.key("name")));
            let host = f.get("host");
            let temp = f.get("temp");
            let has_temp = f.has("temp");
            self.finish(
                &f,
                &item_path,
                &["name", "host", "temp"],
                &[("claim", "persistent volume claims are not supported yet")],
            );
            let Some(name) = name else {
                self.error(item.pos, &item_path, "a volume needs a `name`", None);
                continue;
            };
            let source = if let Some(host) = host {
                let host_path = host
                    .get("path")
                    .and_then(|n| self.text(n, &item_path.key("host.path")));
                match host_path {
                    Some(path) => VolumeSource::Host { path },
                    None => {
                        self.error(
                            host.pos,
                            &item_path,
                            "a host volume needs `host: {path: /dir}`",
                            None,
                        );
                        continue;
                    }
                }
            } else if temp.is_some() || has_temp {
                let memory =
                    temp.and_then(|t| t.get("medium")).and_then(Node::as_str) == Some("memory");
                VolumeSource::Temp { memory }
            } else {
                self.error(
                    item.pos,
                    &item_path,
                    format!("volume `{name}` needs `host: {{path: ...}}` or `temp: {{}}`"),
                    None,
                );
                continue;
            };
            out.push(Volume {
                name,
                source,
                pos: item.pos,
            });
        }
        out
    }

    /// A `{name, path}` mapping (a mount, a device); `need` is the error and hint when one of
    /// them is missing.
    pub(super) fn name_and_path(
        &mut self,
        item: &Node,
        at: &At<'_>,
        need: (&str, Option<&str>),
    ) -> Option<(String, String)> {
        let mut f = self.fields(item, at)?;
        let name = f.get("name").and_then(|n| self.text(n, &at.key("name")));
        let path = f.get("path").and_then(|n| self.text(n, &at.key("path")));
        self.finish(&f, at, &["name", "path"], &[]);
        if name.is_none() || path.is_none() {
            self.error(item.pos, at, need.0, need.1);
        }
        name.zip(path)
    }

    /// Step mounts: `{name, path}` (Drone) or `"src:dst[:ro]"` (Woodpecker, Drone 0.8).
    pub(super) fn mounts(&mut self, node: &Node, path: &At<'_>) -> Vec<StepMount> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of volume mounts");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            match &item.value {
                Value::Scalar(_) => {
                    let Some(text) = self.text(item, &item_path) else {
                        continue;
                    };
                    let parts: Vec<&str> = text.split(':').collect();
                    let (src, dst, read_only) = match parts.as_slice() {
                        [src, dst] => (*src, *dst, false),
                        [src, dst, mode] => (*src, *dst, mode.split(',').any(|m| m == "ro")),
                        _ => {
                            self.error(
                                item.pos,
                                &item_path,
                                format!("`{text}` is not SOURCE:PATH[:ro]"),
                                Some("e.g. `/var/run/docker.sock:/var/run/docker.sock`"),
                            );
                            continue;
                        }
                    };
                    let mount = if src.starts_with('/') {
                        Mount::Host {
                            host: src.to_owned(),
                            path: dst.to_owned(),
                            read_only,
                        }
                    } else {
                        Mount::Named {
                            name: src.to_owned(),
                            path: dst.to_owned(),
                        }
                    };
                    out.push(StepMount {
                        mount,
                        pos: item.pos,
                    });
                }
                Value::Map(_) => {
                    let need = ("a volume mount needs `name` and `path`", None);
                    if let Some((name, path)) = self.name_and_path(item, &item_path, need) {
                        out.push(StepMount {
                            mount: Mount::Named { name, path },
                            pos: item.pos,
                        });
                    }
                }
                Value::Seq(_) => self.expected(item, &item_path, "a volume mount"),
            }
        }
        out
    }

    pub(super) fn resources(&mut self, node: &Node, path: &At<'_>) -> Resources {
        let mut out = Resources::default();
        let Some(mut f) = self.fields(node, path) else {
            return out;
        };
        for (key, set) in [("limits", &mut out.limits), ("requests", &mut out.requests)] {
            let Some(n) = f.get(key) else { continue };
            let set_path = path.key(key);
            let Some(mut g) = self.fields(n, &set_path) else {
                continue;
            };
            if let Some(cpu) = g.get("cpu") {
                let text = self.text(cpu, &set_path).unwrap_or_default();
                set.cpu_millis = parse_cpu(&text);
                if set.cpu_millis.is_none() {
                    self.error(
                        cpu.pos,
                        &set_path,
                        format!("`{text}` is not a CPU amount"),
                        Some("write millicores (`500`, `500m`) or cores (`1.5`)"),
                    );
                }
            }
            if let Some(memory) = g.get("memory") {
                let text = self.text(memory, &set_path).unwrap_or_default();
                set.memory_bytes = parse_bytes(&text);
                if set.memory_bytes.is_none() {
                    self.error(
                        memory.pos,
                        &set_path,
                        format!("`{text}` is not an amount of memory"),
                        Some("write e.g. `512MiB`, `1Gi` or a number of bytes"),
                    );
                }
            }
            self.finish(&g, &set_path, &["cpu", "memory"], &[]);
        }
        self.finish(&f, path, &["limits", "requests"], &[]);
        out
    }

    pub(super) fn pull(&mut self, node: &Node, path: &At<'_>) -> Pull {
        let Some(text) = self.text(node, path) else {
            return Pull::IfNotExists;
        };
        match text.as_str() {
            "always" | "true" => Pull::Always,
            "never" => Pull::Never,
            "if-not-exists" | "default" | "false" | "" => Pull::IfNotExists,
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("unknown pull policy `{other}`"),
                    Some("use `always`, `if-not-exists` or `never`"),
                );
                Pull::IfNotExists
            }
        }
    }

    /// Reads the Docker container keys of a step (`dns`, `devices`, `ports`, `shm_size`...)
    /// into its [`ContainerOptions`], noting where trusted-only ones are set.
    pub(super) fn container_options(&mut self, f: &mut Fields<'_>, path: &At<'_>, step: &mut Step) {
        self.network_options(f, path, step);
        self.capabilities(f, path, step);
        self.resource_options(f, path, step);
        self.tmpfs(f, path, step);
    }

    /// `dns`, `dns_search`, `extra_hosts`, `devices` and `ports`.
    fn network_options(&mut self, f: &mut Fields<'_>, path: &At<'_>, step: &mut Step) {
        let options = &mut step.options;
        if let Some(n) = f.get("dns") {
            let at = path.key("dns");
            for server in self.spanned_texts(n, &at) {
                if server.value.parse::<std::net::IpAddr>().is_err() {
                    self.error(
                        server.pos,
                        &at,
                        format!("`{}` is not the IP address of a DNS server", server.value),
                        Some("write addresses, e.g. `dns: [1.1.1.1, 8.8.8.8]`"),
                    );
                    continue;
                }
                options.dns.push(server.value);
            }
            step.trusted_only.push((Rule::Dns, n.pos));
        }
        if let Some(n) = f.get("dns_search") {
            options.dns_search = self.texts(n, &path.key("dns_search"));
            step.trusted_only.push((Rule::DnsSearch, n.pos));
        }
        if let Some(n) = f.get("extra_hosts") {
            let at = path.key("extra_hosts");
            for entry in self.spanned_texts(n, &at) {
                match extra_host(&entry.value) {
                    Some(line) => options.extra_hosts.push(line),
                    None => self.error(
                        entry.pos,
                        &at,
                        format!("`{}` is not NAME:ADDRESS", entry.value),
                        Some("write e.g. `extra_hosts: [\"db.local:10.0.0.5\"]` (or `host-gateway` for the runner's host)"),
                    ),
                }
            }
            step.trusted_only.push((Rule::ExtraHosts, n.pos));
        }
        if let Some(n) = f.get("devices") {
            options.devices = self.devices(n, &path.key("devices"));
            step.trusted_only.push((Rule::Devices, n.pos));
        }
        if let Some(n) = f.get("ports") {
            options.ports = self.ports(n, &path.key("ports"));
            if options.ports.iter().any(|p| p.host.is_some()) {
                step.trusted_only.push((Rule::HostPorts, n.pos));
            }
        }
    }

    /// `cap_add` and `cap_drop`: Linux capability names, `CAP_` or not.
    fn capabilities(&mut self, f: &mut Fields<'_>, path: &At<'_>, step: &mut Step) {
        let options = &mut step.options;
        for (key, list) in [
            ("cap_add", &mut options.cap_add),
            ("cap_drop", &mut options.cap_drop),
        ] {
            let Some(n) = f.get(key) else { continue };
            let at = path.key(key);
            for cap in self.spanned_texts(n, &at) {
                let name = cap.value.trim().to_ascii_uppercase();
                let name = name.strip_prefix("CAP_").unwrap_or(&name).to_owned();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    self.error(
                        cap.pos,
                        &at,
                        format!("`{}` is not a Linux capability", cap.value),
                        Some("write capability names, e.g. `cap_add: [NET_ADMIN, SYS_PTRACE]`"),
                    );
                    continue;
                }
                list.push(name);
            }
            if key == "cap_add" {
                step.trusted_only.push((Rule::CapAdd, n.pos));
            }
        }
    }

    /// `shm_size`, `mem_limit`, `memswap_limit` and the `cpu_*` settings.
    fn resource_options(&mut self, f: &mut Fields<'_>, path: &At<'_>, step: &mut Step) {
        let options = &mut step.options;
        if let Some(n) = f.get("shm_size") {
            options.shm_size = self.byte_size(n, &path.key("shm_size"));
        }
        if let Some(n) = f.get("mem_limit") {
            let at = path.key("mem_limit");
            if step.resources.limits.memory_bytes.is_some() {
                self.error(
                    n.pos,
                    &at,
                    "the memory limit is set twice: `mem_limit` and `resources.limits.memory`",
                    Some("keep one of them"),
                );
            } else if let Some(bytes) = self.byte_size(n, &at) {
                step.resources.limits.memory_bytes = Some(bytes);
            }
        }
        if let Some(n) = f.get("memswap_limit") {
            let at = path.key("memswap_limit");
            options.memswap_limit = if self.text(n, &at).as_deref().map(str::trim) == Some("-1") {
                Some(-1)
            } else {
                self.byte_size(n, &at).and_then(|b| i64::try_from(b).ok())
            };
        }
        for (key, slot) in [
            ("cpu_shares", &mut options.cpu_shares),
            ("cpu_quota", &mut options.cpu_quota),
            ("cpu_period", &mut options.cpu_period),
        ] {
            if let Some(n) = f.get(key) {
                *slot = self.uint(n, &path.key(key));
            }
        }
        if let Some(n) = f.get("cpu_set") {
            let at = path.key("cpu_set");
            let set = self.texts(n, &at).join(",");
            if set.is_empty()
                || !set
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == '-')
            {
                self.error(
                    n.pos,
                    &at,
                    format!("`{set}` is not a set of CPUs"),
                    Some("write CPU numbers and ranges, e.g. `cpu_set: \"0-1\"` or `[0, 2]`"),
                );
            } else {
                options.cpu_set = Some(set);
            }
        }
    }

    /// `tmpfs` mounts: absolute paths with their options.
    fn tmpfs(&mut self, f: &mut Fields<'_>, path: &At<'_>, step: &mut Step) {
        let options = &mut step.options;
        if let Some(n) = f.get("tmpfs") {
            let at = path.key("tmpfs");
            for entry in self.spanned_texts(n, &at) {
                let (mount, opts) = entry.value.split_once(':').unwrap_or((&entry.value, ""));
                if !mount.starts_with('/') {
                    self.error(
                        entry.pos,
                        &at,
                        format!("`{}` is not an absolute path", entry.value),
                        Some("write e.g. `tmpfs: [\"/run:size=64m\"]`"),
                    );
                    continue;
                }
                options.tmpfs.push((mount.to_owned(), opts.to_owned()));
            }
            step.trusted_only.push((Rule::Tmpfs, n.pos));
        }
    }

    /// An amount of bytes: `64m`, `1GiB`, a number of bytes.
    pub(super) fn byte_size(&mut self, node: &Node, path: &At<'_>) -> Option<u64> {
        let text = self.text(node, path)?;
        let bytes = parse_bytes(&text);
        if bytes.is_none() {
            self.error(
                node.pos,
                path,
                format!("`{text}` is not an amount of memory"),
                Some("write e.g. `64m`, `1GiB` or a number of bytes"),
            );
        }
        bytes
    }

    /// `devices:` as `HOST[:CONTAINER[:PERMISSIONS]]` texts or Drone's `{name, path}`.
    pub(super) fn devices(&mut self, node: &Node, path: &At<'_>) -> Vec<Device> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of devices");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = path.index(i);
            match &item.value {
                Value::Map(_) => {
                    let need = (
                        "a device needs `name` (a host volume of the pipeline) and `path`",
                        Some("or write `/dev/fuse:/dev/fuse`"),
                    );
                    if let Some((name, dest)) = self.name_and_path(item, &at, need) {
                        out.push(Device {
                            source: DeviceSource::Volume(name),
                            path: dest,
                            permissions: "rwm".to_owned(),
                        });
                    }
                }
                _ => {
                    let Some(text) = self.text(item, &at) else {
                        continue;
                    };
                    let parts: Vec<&str> = text.split(':').collect();
                    let (host, dest, permissions) = match parts.as_slice() {
                        [host] => (*host, *host, "rwm"),
                        [host, dest] => (*host, *dest, "rwm"),
                        [host, dest, perms] => (*host, *dest, *perms),
                        _ => ("", "", ""),
                    };
                    let valid = host.starts_with('/')
                        && dest.starts_with('/')
                        && !permissions.is_empty()
                        && permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
                    if !valid {
                        self.error(
                            item.pos,
                            &at,
                            format!("`{text}` is not HOST_DEVICE[:CONTAINER_PATH[:PERMISSIONS]]"),
                            Some("write e.g. `/dev/fuse:/dev/fuse:rwm`"),
                        );
                        continue;
                    }
                    out.push(Device {
                        source: DeviceSource::Host(host.to_owned()),
                        path: dest.to_owned(),
                        permissions: permissions.to_owned(),
                    });
                }
            }
        }
        out
    }

    /// `ports:` as numbers, `HOST:CONTAINER[/udp]` texts or `{port, host, protocol}`.
    pub(super) fn ports(&mut self, node: &Node, path: &At<'_>) -> Vec<Port> {
        const HINT: &str =
            "write e.g. `ports: [6379]`, `[\"8080:80\"]` or `[{port: 80, host: 8080}]`";
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of ports");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = path.index(i);
            let port = match &item.value {
                Value::Map(_) => {
                    let Some(mut g) = self.fields(item, &at) else {
                        continue;
                    };
                    let container = g.get("port").and_then(|n| self.text(n, &at.key("port")));
                    let host = g.get("host").and_then(|n| self.text(n, &at.key("host")));
                    let protocol = g
                        .get("protocol")
                        .and_then(|n| self.text(n, &at.key("protocol")));
                    self.finish(&g, &at, &["port", "host", "protocol"], &[]);
                    let text = format!(
                        "{}{}/{}",
                        host.map(|h| format!("{h}:")).unwrap_or_default(),
                        container.unwrap_or_default(),
                        protocol
                            .unwrap_or_else(|| "tcp".to_owned())
                            .to_ascii_lowercase()
                    );
                    parse_port(&text)
                }
                _ => self.text(item, &at).and_then(|t| parse_port(&t)),
            };
            match port {
                Some(port) => out.push(port),
                None => self.error(item.pos, &at, "not a port", Some(HINT)),
            }
        }
        out
    }
}

pub(super) fn parse_cpu(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some(millis) = text.strip_suffix('m') {
        return millis.parse().ok();
    }
    if text.contains('.') {
        let cores: f64 = text.parse().ok()?;
        return (cores.is_finite() && cores >= 0.0).then(|| (cores * 1000.0).round() as u64);
    }
    text.parse().ok()
}

pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "m" | "mb" | "mi" | "mib" => 1 << 20,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        "t" | "tb" | "ti" | "tib" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// `name:address` (or Compose's `name=address`) as Docker's `name:address`; the address is an
/// IP or `host-gateway`.
pub(super) fn extra_host(text: &str) -> Option<String> {
    let (name, address) = text.split_once('=').or_else(|| text.split_once(':'))?;
    let (name, address) = (name.trim(), address.trim());
    let address_ok = address == "host-gateway" || address.parse::<std::net::IpAddr>().is_ok();
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    (name_ok && address_ok).then(|| format!("{name}:{address}"))
}

/// `6379`, `6379/udp`, `8080:80`, `8080:80/tcp`.
pub(super) fn parse_port(text: &str) -> Option<Port> {
    let (ports, protocol) = text.trim().split_once('/').unwrap_or((text.trim(), "tcp"));
    let udp = match protocol {
        "tcp" => false,
        "udp" => true,
        _ => return None,
    };
    let (host, container) = match ports.split_once(':') {
        Some((host, container)) => (
            Some(host.parse::<u16>().ok().filter(|p| *p > 0)?),
            container,
        ),
        None => (None, ports),
    };
    let container = container.parse::<u16>().ok().filter(|p| *p > 0)?;
    Some(Port {
        container,
        host,
        udp,
    })
}
