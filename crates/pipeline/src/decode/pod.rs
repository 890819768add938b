//! Drone's Kubernetes keys of a pipeline: where and how its pod runs (`metadata`,
//! `service_account_name`, `node_selector`, `tolerations`, `dns_config`, `host_aliases`).

use super::*;

/// The pipeline keys this module reads.
pub const POD_KEYS: &[&str] = &[
    "metadata",
    "service_account_name",
    "node_selector",
    "tolerations",
    "dns_config",
    "host_aliases",
];

const TOLERATION_OPERATORS: &[&str] = &["Exists", "Equal"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

impl Decoder<'_> {
    /// Reads the pod keys of a pipeline into `pod`; on a pipeline of another type, each says
    /// that only a runner on Kubernetes uses it.
    pub(super) fn pod_options(
        &mut self,
        f: &mut Fields<'_>,
        path: &At<'_>,
        kind: PipelineType,
        pod: &mut PodOptions,
    ) {
        for key in POD_KEYS {
            let Some(node) = f.get(key) else { continue };
            let at = path.key(key);
            if kind != PipelineType::Kubernetes {
                self.warn(
                    node.pos,
                    &at,
                    format!("`{key}` is read only for `type: kubernetes` pipelines; this one is `type: {}`", kind.as_str()),
                    Some("set `type: kubernetes`, or remove it"),
                );
            }
            match *key {
                "metadata" => self.pod_metadata(node, &at, pod),
                "service_account_name" => pod.service_account = self.text(node, &at),
                "node_selector" => pod.node_selector = self.labels(node, &at),
                "tolerations" => {
                    pod.tolerations = self.tolerations(node, &at, "toleration_seconds")
                }
                "dns_config" => pod.dns = Some(self.pod_dns(node, &at)),
                "host_aliases" => pod.host_aliases = self.host_aliases(node, &at),
                _ => {}
            }
        }
    }

    fn pod_metadata(&mut self, node: &Node, path: &At<'_>, pod: &mut PodOptions) {
        let Some(mut f) = self.fields(node, path) else {
            return;
        };
        if let Some(n) = f.get("namespace") {
            pod.namespace = self.text(n, &path.key("namespace"));
        }
        if let Some(n) = f.get("labels") {
            pod.labels = self.labels(n, &path.key("labels"));
        }
        if let Some(n) = f.get("annotations") {
            pod.annotations = self.labels(n, &path.key("annotations"));
        }
        if let Some(n) = f.get("name") {
            self.warn(
                n.pos,
                &path.key("name"),
                "`metadata.name` is not used: gantry names each stage's pod itself, so that two builds never clash",
                Some("remove it; labels and annotations are kept"),
            );
        }
        self.finish(
            &f,
            path,
            &["namespace", "labels", "annotations", "name"],
            &[],
        );
    }

    /// Tolerations, with `seconds_key` for how long one lasts (each dialect spells it its own
    /// way).
    pub(super) fn tolerations(
        &mut self,
        node: &Node,
        path: &At<'_>,
        seconds_key: &str,
    ) -> Vec<Toleration> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of tolerations");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = path.index(i);
            let Some(mut f) = self.fields(item, &at) else {
                continue;
            };
            let mut toleration = Toleration::default();
            if let Some(n) = f.get("key") {
                toleration.key = self.text(n, &at.key("key"));
            }
            if let Some(n) = f.get("operator") {
                toleration.operator = self.one_of(n, &at.key("operator"), TOLERATION_OPERATORS);
            }
            if let Some(n) = f.get("value") {
                toleration.value = self.text(n, &at.key("value"));
            }
            if let Some(n) = f.get("effect") {
                toleration.effect = self.one_of(n, &at.key("effect"), TAINT_EFFECTS);
            }
            if let Some(n) = f.get(seconds_key) {
                toleration.toleration_seconds = self
                    .uint(n, &at.key(seconds_key))
                    .and_then(|s| i64::try_from(s).ok());
            }
            self.finish(
                &f,
                &at,
                &["key", "operator", "value", "effect", seconds_key],
                &[],
            );
            out.push(toleration);
        }
        out
    }

    fn one_of(&mut self, node: &Node, path: &At<'_>, allowed: &[&str]) -> Option<String> {
        let text = self.text(node, path)?;
        if allowed.contains(&text.as_str()) {
            return Some(text);
        }
        self.error(
            node.pos,
            path,
            format!("`{text}` is not one of {}", allowed.join(", ")),
            None,
        );
        None
    }

    fn pod_dns(&mut self, node: &Node, path: &At<'_>) -> PodDns {
        let mut dns = PodDns::default();
        let Some(mut f) = self.fields(node, path) else {
            return dns;
        };
        if let Some(n) = f.get("nameservers") {
            dns.nameservers = self.texts(n, &path.key("nameservers"));
        }
        if let Some(n) = f.get("searches") {
            dns.searches = self.texts(n, &path.key("searches"));
        }
        if let Some(n) = f.get("options") {
            let at = path.key("options");
            if let Value::Seq(items) = &n.value {
                for (i, item) in items.iter().enumerate() {
                    let item_at = at.index(i);
                    let Some(mut o) = self.fields(item, &item_at) else {
                        continue;
                    };
                    let name = o
                        .get("name")
                        .and_then(|n| self.text(n, &item_at.key("name")));
                    let value = o
                        .get("value")
                        .and_then(|n| self.text(n, &item_at.key("value")));
                    self.finish(&o, &item_at, &["name", "value"], &[]);
                    match name {
                        Some(name) => dns.options.push((name, value)),
                        None => self.error(
                            item.pos,
                            &item_at,
                            "a DNS option needs a `name`",
                            Some("e.g. `{name: ndots, value: \"2\"}`"),
                        ),
                    }
                }
            } else {
                self.expected(n, &at, "a list of `{name, value}` options");
            }
        }
        self.finish(&f, path, &["nameservers", "searches", "options"], &[]);
        dns
    }

    fn host_aliases(&mut self, node: &Node, path: &At<'_>) -> Vec<HostAlias> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of `{ip, hostnames}`");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = path.index(i);
            let Some(mut f) = self.fields(item, &at) else {
                continue;
            };
            let ip = f.get("ip").and_then(|n| self.text(n, &at.key("ip")));
            let hostnames = f
                .get("hostnames")
                .map(|n| self.texts(n, &at.key("hostnames")))
                .unwrap_or_default();
            self.finish(&f, &at, &["ip", "hostnames"], &[]);
            match ip {
                Some(ip) if ip.parse::<std::net::IpAddr>().is_ok() && !hostnames.is_empty() => {
                    out.push(HostAlias { ip, hostnames });
                }
                _ => self.error(
                    item.pos,
                    &at,
                    "a host alias needs an `ip` address and at least one of `hostnames`",
                    Some("e.g. `{ip: 10.0.0.5, hostnames: [db.internal]}`"),
                ),
            }
        }
        out
    }
}
