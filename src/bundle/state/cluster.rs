//! `state/cluster.yaml`: which cluster the directory holds (`output::check_owner` reads only
//! that), which control plane is the init node, and the etcd cluster the bundle's units formed:
//! its members, each with the flags its unit starts etcd with. A re-run keeps all of it whatever
//! the Inventory's order; `state restore` rebuilds it from plan.json, which holds the same.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::{bad, read_opt, StateError, MARKER_FILE};

/// An etcd member as its unit starts it. Kept as it was first rendered: etcd reads
/// `--initial-cluster` and `--initial-cluster-state` only when its data dir is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMember {
    pub name: String,
    /// `https://<address>:2380`, the URL the member advertises to its peers.
    #[serde(rename = "peerURL")]
    pub peer_url: String,
    /// `new` for the members that formed the cluster, `existing` for one added to it later.
    pub initial_cluster_state: String,
    /// `--initial-cluster` of the member's unit: `name=peerURL,...`, the members when it first
    /// started, itself included.
    pub initial_cluster: String,
}

impl EtcdMember {
    /// `name=peerURL`, an entry of `--initial-cluster`.
    pub fn entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url)
    }
}

/// The etcd cluster the bundle's units form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRecord {
    /// The first run's members formed (or will form) the cluster: a member added by a later run
    /// joins it (`--initial-cluster-state=existing`, after `etcdctl member add`).
    pub formed: bool,
    /// In the order they joined.
    pub members: Vec<EtcdMember>,
}

/// The contents of `state/cluster.yaml`. Fields this version does not know are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    pub cluster_name: String,
    /// The control plane that ran (or will run) `kubeadm init` and holds super-admin.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdRecord>,
}

impl ClusterRecord {
    /// The file's text: a comment, then the record.
    pub fn text(&self) -> String {
        let mut out = format!("# Written by kubebundle: this directory holds cluster {:?}.\n", self.cluster_name);
        if self.init_node.is_some() || self.etcd.is_some() {
            out.push_str(
                "# initNode runs `kubeadm init` and holds super-admin.conf; etcd lists the members the units formed.\n\
                 # Later runs keep both whatever the Inventory's order (README: \"The init node\", \"etcd membership\").\n",
            );
        }
        out + &serde_saphyr::to_string(self).unwrap_or_else(|_| format!("clusterName: {}\n", self.cluster_name))
    }

    /// `state/cluster.yaml` of the state in `dir`, or None when there is none.
    pub fn read(dir: &Path) -> Result<Option<ClusterRecord>, StateError> {
        let Some(text) = read_opt(dir, MARKER_FILE)? else { return Ok(None) };
        serde_saphyr::from_str(&text).map(Some).map_err(|_| {
            bad(
                dir,
                MARKER_FILE,
                "is not a cluster record (clusterName, initNode, etcd)",
                "restore it from a backup, or delete it and run `kubebundle state restore`, which rebuilds it from plan.json",
            )
        })
    }

    /// The init node and etcd members a bundle's plan.json holds; for a plan written before they
    /// were recorded, what it implies: the node holding kubeadm-init or super-admin.conf (else the
    /// first control plane), and its local etcd members as the cluster they formed.
    pub fn from_plan(cluster_name: &str, plan: &serde_json::Value) -> ClusterRecord {
        let nodes = plan["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
        let has_role = |n: &serde_json::Value, role: &str| n["roles"].as_array().is_some_and(|r| r.iter().any(|x| x == role));
        let init_node = plan["initNode"].as_str().map(String::from).or_else(|| {
            let holds = |n: &&serde_json::Value| {
                n["files"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f["artifact"] == "kubeadm-init" || f["artifact"] == "super-admin.conf"))
            };
            let first = nodes.iter().find(holds).or_else(|| nodes.iter().find(|n| has_role(n, "control-plane")));
            first.and_then(|n| n["name"].as_str()).map(String::from)
        });
        let members: Vec<EtcdMember> = match plan.get("etcdMembers") {
            Some(list) => serde_json::from_value(list.clone()).unwrap_or_default(),
            None if plan["etcd"] == "local" => {
                let founders: Vec<(String, String)> = nodes
                    .iter()
                    .filter(|n| has_role(n, "etcd"))
                    .filter_map(|n| {
                        let address: std::net::IpAddr = n["address"].as_str()?.parse().ok()?;
                        Some((n["name"].as_str()?.to_string(), peer_url(address)))
                    })
                    .collect();
                founding(&founders)
            }
            None => Vec::new(),
        };
        let etcd = (!members.is_empty()).then_some(EtcdRecord { formed: true, members });
        ClusterRecord { cluster_name: cluster_name.to_string(), init_node, etcd }
    }
}

/// The peer URL of a member at `address`.
pub fn peer_url(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V6(a) => format!("https://[{a}]:2380"),
        a => format!("https://{a}:2380"),
    }
}

/// The members that form a new cluster, from (name, peer URL) in order: each one's unit starts
/// with `--initial-cluster-state=new` and all of them in `--initial-cluster`.
pub fn founding(members: &[(String, String)]) -> Vec<EtcdMember> {
    let initial_cluster = members.iter().map(|(n, u)| format!("{n}={u}")).collect::<Vec<_>>().join(",");
    members
        .iter()
        .map(|(name, url)| EtcdMember {
            name: name.clone(),
            peer_url: url.clone(),
            initial_cluster_state: "new".into(),
            initial_cluster: initial_cluster.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_reads_back_and_quotes_what_yaml_would_misread() {
        let members = founding(&[("true".into(), peer_url("fd00::1".parse().unwrap())), ("1".into(), peer_url([10, 0, 0, 2].into()))]);
        let r = ClusterRecord { cluster_name: "on".into(), init_node: Some("1".into()), etcd: Some(EtcdRecord { formed: true, members }) };
        let text = r.text();
        assert!(text.starts_with("# Written by kubebundle: this directory holds cluster \"on\".\n"), "{text}");
        let back: ClusterRecord = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, r, "{text}");
        assert_eq!(back.etcd.unwrap().members[0].initial_cluster, "true=https://[fd00::1]:2380,1=https://10.0.0.2:2380");
        // Without records the file is the marker it always was.
        let bare = ClusterRecord { cluster_name: "k".into(), ..Default::default() };
        assert_eq!(bare.text(), super::super::files::marker_text("k"));
    }

    #[test]
    fn an_old_plan_implies_its_init_node_and_founders() {
        let plan = serde_json::json!({
            "etcd": "local",
            "nodes": [
                {"name": "w1", "address": "10.0.0.9", "roles": ["worker"], "files": []},
                {"name": "cp2", "address": "10.0.0.2", "roles": ["control-plane", "etcd"], "files": []},
                {"name": "cp1", "address": "10.0.0.1", "roles": ["control-plane", "etcd"], "files": [{"artifact": "super-admin.conf"}]},
            ]
        });
        let r = ClusterRecord::from_plan("k", &plan);
        assert_eq!(r.init_node.as_deref(), Some("cp1"));
        let m = r.etcd.unwrap().members;
        assert_eq!(m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["cp2", "cp1"]);
        assert!(m.iter().all(|m| m.initial_cluster == "cp2=https://10.0.0.2:2380,cp1=https://10.0.0.1:2380"));
    }
}
