//! What a re-run keeps of the cluster's shape, decided before the plan is made: the init node
//! (the control plane that runs `kubeadm init` and holds super-admin.conf: the catalogue's
//! FirstControlPlane scope) and the etcd cluster the first run formed (each member's unit starts
//! etcd with the `--initial-cluster` and `--initial-cluster-state` it was first rendered with).
//! Made from the state's record (`state/cluster.yaml`), plan.json for a bundle made before the
//! record, and the config; the run then says what the operator must do on the running cluster.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use crate::bundle::plan::{NodePlan, Plan};
use crate::bundle::state::cluster::{self, ClusterRecord, EtcdMember, EtcdRecord};
use crate::bundle::state::{StateError, MARKER_FILE};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The Inventory drops what the running cluster stands on without naming what replaces it:
    /// an input error.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What the bundle recorded: state/cluster.yaml, completed from plan.json for a bundle written
/// before the record held the init node and the etcd members.
pub struct Recorded {
    pub record: ClusterRecord,
    /// What was taken from plan.json (`init node cp1`, `etcd members cp1, cp2`).
    pub from_plan: Vec<String>,
    /// The bundle's plan.json, read only when needed (it is tens of megabytes for tens of
    /// thousands of nodes): to complete an old record, or to say what a new init node changes.
    plan_path: std::path::PathBuf,
}

impl Recorded {
    /// What the bundle `cluster_dir` recorded; None for a new bundle.
    pub fn read(cluster_dir: &Path, cluster_name: &str) -> Result<Option<Recorded>, StateError> {
        let plan_path = cluster_dir.join("plan.json");
        let stored = ClusterRecord::read(&cluster_dir.join("state"))?;
        // Every record this version writes names the init node; one without was written before.
        let (record, from_plan) = match stored {
            Some(r) if r.init_node.is_some() => (r, Vec::new()),
            stored => {
                let Some(plan) = read_plan(&plan_path) else {
                    return Ok(stored.map(|record| Recorded { record, from_plan: Vec::new(), plan_path }));
                };
                let implied = ClusterRecord::from_plan(cluster_name, &plan);
                let mut record = stored.unwrap_or_else(|| ClusterRecord { cluster_name: cluster_name.to_string(), ..Default::default() });
                let mut from_plan = Vec::new();
                if let Some(n) = implied.init_node {
                    from_plan.push(format!("init node {n}"));
                    record.init_node = Some(n);
                }
                if let Some(e) = implied.etcd.filter(|_| record.etcd.is_none()) {
                    from_plan.push(format!("etcd members {}", names(&e.members)));
                    record.etcd = Some(e);
                }
                (record, from_plan)
            }
        };
        Ok(Some(Recorded { record, from_plan, plan_path }))
    }

    /// The bundle's plan.json before this run.
    pub fn plan(&self) -> Option<serde_json::Value> {
        read_plan(&self.plan_path)
    }
}

fn read_plan(path: &Path) -> Option<serde_json::Value> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn names(members: &[EtcdMember]) -> String {
    members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The run's decision.
pub struct Decision {
    pub init_node: String,
    /// The init node it replaces, when the operator named a new one.
    pub replaces: Option<String>,
    /// The etcd members after this run, in the order they joined.
    pub etcd: Vec<EtcdMember>,
    /// Members this run adds to a running cluster, in the order they must join.
    pub joining: Vec<String>,
    /// Members of the record that are no longer etcd nodes of the Inventory.
    pub leaving: Vec<EtcdMember>,
    /// Members whose address changed: (name, old peer URL).
    pub readdressed: Vec<(String, String)>,
    /// The record had nothing of this: the run records it (and says so).
    pub first_record: bool,
}

impl Decision {
    /// What state/cluster.yaml holds after the run.
    pub fn record(&self, cluster_name: &str) -> ClusterRecord {
        ClusterRecord {
            cluster_name: cluster_name.to_string(),
            init_node: Some(self.init_node.clone()),
            etcd: (!self.etcd.is_empty()).then(|| EtcdRecord { formed: true, members: self.etcd.clone() }),
        }
    }
}

/// Decides the init node and the etcd members of this run. `previous` is what the bundle
/// recorded (None: a new bundle, or `--force`); `state_dir` is named in messages.
pub fn decide(config: &Config, previous: Option<&Recorded>, state_dir: &Path) -> Result<Decision, MembershipError> {
    let record_file = state_dir.join(MARKER_FILE).display().to_string();
    let recorded_init = previous.and_then(|p| p.record.init_node.as_deref());
    let is_cp = |name: &str| config.control_planes().any(|n| n.name == name);
    let (init_node, replaces) = match (recorded_init, config.init_node.as_deref()) {
        (None, _) => (config.first_control_plane().name.clone(), None),
        (Some(r), Some(named)) if named != r => (named.to_string(), Some(r.to_string())),
        (Some(r), _) if is_cp(r) => (r.to_string(), None),
        (Some(r), _) => {
            let gone =
                if config.nodes.iter().any(|n| n.name == r) { "is no longer a control plane" } else { "is no longer in the Inventory" };
            let other = config.first_control_plane().name.clone();
            return Err(MembershipError::Refused(format!(
                "{}: error: Inventory.nodes: {r} is this cluster's init node (recorded in {record_file}: it holds super-admin.conf and, with the kubeadm profile, runs `kubeadm init`) and {gone}; nothing was written\n  hint: name the control plane that takes its place, `initNode: {other}` in the Inventory or `generate --init-node {other}` (super-admin.conf moves to it, and with the kubeadm profile kubeadm-init.yaml; README \"The init node\"); or put {r} back",
                config.inventory_at()
            )));
        }
    };

    let inventory: Vec<(&str, String)> = config
        .nodes
        .iter()
        .filter(|n| n.roles.etcd && config.local_etcd())
        .map(|n| (n.name.as_str(), cluster::peer_url(n.address)))
        .collect();
    let recorded = previous.and_then(|p| p.record.etcd.as_ref()).filter(|e| e.formed && !e.members.is_empty());
    let first_record = previous.is_none_or(|p| p.record.init_node.is_none());
    let Some(recorded) = recorded else {
        let founders: Vec<(String, String)> = inventory.iter().map(|(n, u)| (n.to_string(), u.clone())).collect();
        let etcd = cluster::founding(&founders);
        return Ok(Decision { init_node, replaces, etcd, joining: vec![], leaving: vec![], readdressed: vec![], first_record });
    };
    // The running cluster: its members that stay keep their units; the others leave.
    let mut etcd = Vec::new();
    let mut readdressed = Vec::new();
    let mut leaving = Vec::new();
    for m in &recorded.members {
        match inventory.iter().find(|(n, _)| *n == m.name) {
            Some((_, url)) => {
                if *url != m.peer_url {
                    readdressed.push((m.name.clone(), m.peer_url.clone()));
                }
                etcd.push(EtcdMember { peer_url: url.clone(), ..m.clone() });
            }
            None => leaving.push(m.clone()),
        }
    }
    let new: Vec<&(&str, String)> = inventory.iter().filter(|(n, _)| !recorded.members.iter().any(|m| m.name == *n)).collect();
    if etcd.is_empty() && !new.is_empty() {
        let joiners = new.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        return Err(MembershipError::Refused(format!(
            "{}: error: Inventory.nodes: every member of the running etcd cluster ({}, recorded in {record_file}) has left the Inventory, so {joiners} would have no cluster to join; nothing was written\n  hint: keep at least one current member in the Inventory until the new ones have joined (add them in one run, remove the old ones in a later run)",
            config.inventory_at(),
            names(&recorded.members)
        )));
    }
    // Each new member joins after the previous one started: its --initial-cluster names the
    // members of the cluster at that moment, itself included, as `etcdctl member add` prints it.
    let mut current: Vec<String> = etcd.iter().map(EtcdMember::entry).collect();
    let mut joining = Vec::new();
    for (name, url) in new {
        current.push(format!("{name}={url}"));
        etcd.push(EtcdMember {
            name: name.to_string(),
            peer_url: url.clone(),
            initial_cluster_state: "existing".into(),
            initial_cluster: current.join(","),
        });
        joining.push(name.to_string());
    }
    Ok(Decision { init_node, replaces, etcd, joining, leaving, readdressed, first_record })
}

/// `https://<address>:2379`.
fn client_url(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("https://[{a}]:2379"),
        _ => format!("https://{address}:2379"),
    }
}

/// etcdctl as run on `member`: its client URL, and the etcd CA and healthcheck client where the
/// profile places them on that node.
fn etcdctl(member: &NodePlan) -> String {
    let mut s = format!("etcdctl --endpoints={}", client_url(&member.address));
    for (flag, artifact) in [("cacert", "etcd-ca.crt"), ("cert", "etcd-healthcheck-client.crt"), ("key", "etcd-healthcheck-client.key")] {
        if let Some(p) = member.path_of(artifact) {
            s += &format!(" --{flag}={p}");
        }
    }
    s
}

/// A node's files in a plan.json: absolute path → artifact.
fn planned_files(plan: &serde_json::Value, node: &str) -> Option<BTreeSet<String>> {
    let n = plan["nodes"].as_array()?.iter().find(|n| n["name"] == node)?;
    Some(n["files"].as_array()?.iter().filter_map(|f| f["path"].as_str().map(|p| format!("/{p}"))).collect())
}

fn listed(paths: &BTreeSet<String>) -> String {
    paths.iter().cloned().collect::<Vec<_>>().join(", ")
}

impl Decision {
    /// What was recorded for the first time, for the run's `state:` lines.
    pub fn recorded(&self, previous: Option<&Recorded>) -> Vec<String> {
        let etcd = if self.etcd.is_empty() { String::new() } else { format!(" and the etcd members {}", names(&self.etcd)) };
        match previous {
            Some(p) if !p.from_plan.is_empty() => {
                vec![format!(
                    "recorded in state/{MARKER_FILE} from plan.json (the state had no record of them): {}",
                    p.from_plan.join("; ")
                )]
            }
            _ if self.first_record => vec![format!(
                "recorded {} as the init node{etcd} in state/{MARKER_FILE}: later runs keep them whatever the Inventory's order",
                self.init_node
            )],
            _ => vec![],
        }
    }

    /// What the operator must do on the running cluster, and what a new init node changes, one
    /// line each (commands indented), from the plan this run made and the previous plan.json.
    pub fn steps(&self, config: &Config, plan: &Plan, previous: Option<&Recorded>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(old) = &self.replaces {
            let by = config.init_node_by.as_deref().unwrap_or("the config");
            out.push(format!("init node: {} replaces {old} as the init node (named by {by}). In the bundle:", self.init_node));
            let before_plan = previous.and_then(Recorded::plan);
            let before = before_plan.as_ref();
            for node in [&self.init_node, old] {
                let Some(now) = plan.node(node) else {
                    out.push(format!(
                        "  {node} is no longer in the Inventory: its files (its super-admin.conf with them) leave the bundle"
                    ));
                    continue;
                };
                let now: BTreeSet<String> = now.files.iter().map(|f| format!("/{}", f.path)).collect();
                match before.and_then(|b| planned_files(b, node)) {
                    Some(was) => {
                        let gains: BTreeSet<String> = now.difference(&was).cloned().collect();
                        let loses: BTreeSet<String> = was.difference(&now).cloned().collect();
                        let mut what = Vec::new();
                        if !gains.is_empty() {
                            what.push(format!("gains {}", listed(&gains)));
                        }
                        if !loses.is_empty() {
                            what.push(format!("loses {}", listed(&loses)));
                        }
                        if !what.is_empty() {
                            out.push(format!("  {node} {}", what.join("; ")));
                        }
                    }
                    None => out.push(format!("  {node} is a new node and gets the init node's files")),
                }
            }
            let endpoint_was = before.and_then(|b| b["controlPlaneEndpoint"].as_str());
            if let Some(was) = endpoint_was.filter(|e| config.endpoint_defaulted && *e != plan.control_plane_endpoint) {
                out.push(format!(
                    "  controlPlaneEndpoint is not set, so the API server endpoint is the init node's address: it changes from {was} to {}, and with it every file that names it (kubeconfigs, join files) and the kube-apiserver certificates' SANs",
                    plan.control_plane_endpoint
                ));
            }
            let init_yaml = plan.node(&self.init_node).and_then(|n| n.path_of("kubeadm-init"));
            let kept =
                if plan.node(old).is_some() { "delete it from that host" } else { "its archive holds it: keep that as safe as a CA key" };
            out.push(format!(
                "  on a running cluster nothing needs to run for this{}; super-admin.conf is now on {}, and the one {old} held keeps authenticating until it expires: {kept}",
                if init_yaml.is_some() { " (kubeadm-init.yaml only serves to build the cluster anew)" } else { "" },
                self.init_node
            ));
        }
        if self.etcd.is_empty() && !self.leaving.is_empty() {
            out.push(format!(
                "etcd: {} are no longer etcd nodes of the Inventory: the bundle no longer records an etcd cluster (etcd nodes added later form a new one)",
                names(&self.leaving)
            ));
        }
        // etcd: only where the profile renders etcd units (kubeadm join --control-plane adds a
        // kubeadm member itself), on a member that stays.
        let Some(contact) = self.etcd.iter().find(|m| !self.joining.contains(&m.name)).and_then(|m| plan.node(&m.name)) else {
            return out;
        };
        if contact.path_of("etcd.service").is_none() {
            return out;
        }
        let ctl = etcdctl(contact);
        let on = &contact.name;
        for m in &self.leaving {
            out.push(format!(
                "etcd: {} left the Inventory but is still a member of the running etcd cluster. Remove it{}, on {on}:",
                m.name,
                if self.joining.is_empty() { String::new() } else { format!(" before adding {}", self.joining.join(", ")) }
            ));
            out.push(format!("  {ctl} member list"));
            out.push(format!("  {ctl} member remove <ID>   # <ID>: the first column of the line of {} ({})", m.name, m.peer_url));
            out.push(format!("  then stop etcd on {} and delete its data dir /var/lib/etcd (it cannot rejoin with it)", m.name));
        }
        for (name, old) in &self.readdressed {
            let Some(m) = self.etcd.iter().find(|m| m.name == *name) else { continue };
            out.push(format!(
                "etcd: the peer URL of {name} changes from {old} to {}. Before restarting etcd on {name}, on {on}:",
                m.peer_url
            ));
            out.push(format!("  {ctl} member list"));
            out.push(format!("  {ctl} member update <ID> --peer-urls={}   # <ID>: the first column of the line of {name}", m.peer_url));
        }
        for name in &self.joining {
            let (Some(m), Some(node)) = (self.etcd.iter().find(|m| m.name == *name), plan.node(name)) else { continue };
            if node.path_of("etcd.service").is_none() {
                continue;
            }
            out.push(format!(
                "etcd: {name} joins the running etcd cluster (its unit: --initial-cluster-state=existing --initial-cluster={}). Before starting etcd on {name}, on {on}:",
                m.initial_cluster
            ));
            out.push(format!("  {ctl} member add {name} --peer-urls={}", m.peer_url));
            out.push(format!("  then start etcd on {name}; wait until `etcdctl ... endpoint health --cluster` reports every member healthy before adding another"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(nodes: &[(&str, &str, &str)]) -> Config {
        let mut text = "apiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n".to_string();
        for (n, a, r) in nodes {
            text += &format!("- {{name: {n}, address: {a}, roles: [{r}]}}\n");
        }
        crate::config::load_str(&text, "c.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn recorded(config: &Config) -> Recorded {
        let d = decide(config, None, Path::new("state")).unwrap();
        Recorded { record: d.record(&config.cluster_name), from_plan: vec![], plan_path: "plan.json".into() }
    }

    const CP: &str = "control-plane, etcd";

    #[test]
    fn new_members_join_one_after_the_other_and_kept_ones_keep_their_flags() {
        let first = config(&[("a", "10.0.0.1", CP), ("b", "10.0.0.2", CP), ("w", "10.0.0.9", "worker")]);
        let before = recorded(&first);
        let founders = before.record.etcd.clone().unwrap().members;
        assert!(founders
            .iter()
            .all(|m| m.initial_cluster_state == "new" && m.initial_cluster == "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380"));
        // b leaves, d and c join (in the Inventory's order), a is listed last.
        let later = config(&[("d", "10.0.0.4", "etcd"), ("c", "10.0.0.3", "etcd"), ("w", "10.0.0.9", "worker"), ("a", "10.0.0.1", CP)]);
        let d = decide(&later, Some(&before), Path::new("state")).unwrap();
        assert_eq!(d.init_node, "a");
        assert_eq!(d.leaving.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(d.joining, ["d", "c"]);
        let by_name = |n: &str| d.etcd.iter().find(|m| m.name == n).unwrap().clone();
        assert_eq!(by_name("a"), founders[0], "a kept member keeps its record");
        assert_eq!(by_name("d").initial_cluster, "a=https://10.0.0.1:2380,d=https://10.0.0.4:2380");
        assert_eq!(by_name("c").initial_cluster, "a=https://10.0.0.1:2380,d=https://10.0.0.4:2380,c=https://10.0.0.3:2380");
        assert!(["c", "d"].iter().all(|n| by_name(n).initial_cluster_state == "existing"));
        assert_eq!(d.etcd.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["a", "d", "c"], "in the order they joined");
    }

    #[test]
    fn a_cluster_whose_members_all_left_cannot_be_joined() {
        let before = recorded(&config(&[("a", "10.0.0.1", CP)]));
        let later = config(&[("a", "10.0.0.1", "control-plane"), ("e", "10.0.0.5", "etcd")]);
        let Err(MembershipError::Refused(e)) = decide(&later, Some(&before), Path::new("state")) else { panic!("must refuse") };
        assert!(e.starts_with("c.yaml:2:7: error: Inventory.nodes: every member of the running etcd cluster (a, recorded in state/cluster.yaml) has left the Inventory, so e would have no cluster to join"), "{e}");
        // A member that moves keeps its record but its peer URL, and says so.
        let moved = decide(&config(&[("a", "10.0.0.7", CP)]), Some(&before), Path::new("state")).unwrap();
        assert_eq!(moved.readdressed, [("a".to_string(), "https://10.0.0.1:2380".to_string())]);
        assert_eq!(
            (moved.etcd[0].peer_url.as_str(), moved.etcd[0].initial_cluster.as_str()),
            ("https://10.0.0.7:2380", "a=https://10.0.0.1:2380")
        );
    }

    #[test]
    fn an_unformed_record_forms_the_cluster_anew() {
        let mut before = recorded(&config(&[("a", "10.0.0.1", CP)]));
        before.record.etcd.as_mut().unwrap().formed = false;
        let d = decide(&config(&[("a", "10.0.0.1", CP), ("b", "10.0.0.2", CP), ("c", "10.0.0.3", CP)]), Some(&before), Path::new("state"))
            .unwrap();
        assert!(
            d.joining.is_empty() && d.etcd.iter().all(|m| m.initial_cluster_state == "new" && m.initial_cluster.matches('=').count() == 3)
        );
    }
}
