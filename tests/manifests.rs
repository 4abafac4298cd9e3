//! The cluster manifests (reference §7, §9, §10): every object's apiVersion, kind, name,
//! namespace, type and exact data keys; cluster-info's JWS checked with openssl's HMAC; the
//! embedded ClusterConfiguration read back by kubebundle's own strict loader; RBAC by version.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use common::*;
use serde_json::Value;

fn config(version: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: mf\nkubernetesVersion: {version}\nencryptionAlgorithm: ECDSA-P256\ncontrolPlaneEndpoint: api.mf.example:6443\nnetworking: {{serviceSubnet: 10.112.0.0/12, podSubnet: 10.244.0.0/16, dnsDomain: mf.local}}\napiServer: {{certSANs: [extra.mf.example, 10.6.0.100]}}\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: abcdef.0123456789abcdef\n  description: workers\n- token: ghijkl.0123456789ghijkl\n  usages: [signing]\n  groups: []\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- {{name: cp1, address: 10.6.0.1, roles: [control-plane, etcd]}}\n- {{name: w1, address: 10.6.0.11, roles: [worker]}}\n"
    )
}

fn objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn meta(o: &Value) -> (String, String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (s(&o["apiVersion"]), s(&o["kind"]), s(&o["metadata"]["name"]), s(&o["metadata"]["namespace"]))
}

fn generate(dir: &Path, version: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("mf.yaml"), config(version)).unwrap();
    let run = kubebundle(dir, &["generate", "--config", "mf.yaml", "--out", "out", "--now", "2026-03-01T00:00:00Z"], &[]);
    assert!(run.ok(), "{}", run.describe());
    dir.join("out/mf/manifests")
}

#[test]
fn manifests_match_the_reference() {
    let tmp = temp_dir("manifests");
    let dir = tmp.path();
    let m = generate(dir, "v1.34.1");
    let listed: BTreeSet<String> = std::fs::read_dir(&m).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(
        listed,
        set(&[
            "bootstrap-token-abcdef.yaml",
            "bootstrap-token-ghijkl.yaml",
            "cluster-info.yaml",
            "kubeadm-config.yaml",
            "kubelet-config.yaml",
            "rbac.yaml"
        ])
    );

    // Bootstrap-token Secrets (§7).
    let s = &objects(&m.join("bootstrap-token-abcdef.yaml"))[0];
    assert_eq!(meta(s), ("v1".into(), "Secret".into(), "bootstrap-token-abcdef".into(), "kube-system".into()));
    assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
    assert_eq!(keys(s), set(&["apiVersion", "data", "kind", "metadata", "type"]));
    assert_eq!(
        keys(&s["data"]),
        set(&[
            "auth-extra-groups",
            "description",
            "expiration",
            "token-id",
            "token-secret",
            "usage-bootstrap-authentication",
            "usage-bootstrap-signing"
        ])
    );
    let dec = |k: &str| String::from_utf8(B64.decode(s["data"][k].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(
        (dec("token-id"), dec("token-secret"), dec("usage-bootstrap-signing")),
        ("abcdef".into(), "0123456789abcdef".into(), "true".into())
    );
    assert_eq!(dec("auth-extra-groups"), "system:bootstrappers:kubeadm:default-node-token");
    assert_eq!(dec("expiration"), "2026-03-02T00:00:00Z");
    let signing_only = &objects(&m.join("bootstrap-token-ghijkl.yaml"))[0];
    assert_eq!(keys(&signing_only["data"]), set(&["expiration", "token-id", "token-secret", "usage-bootstrap-signing"]));

    // cluster-info (§9): anonymous-readable kubeconfig and one JWS per signing token.
    let ci = &objects(&m.join("cluster-info.yaml"))[0];
    assert_eq!(meta(ci), ("v1".into(), "ConfigMap".into(), "cluster-info".into(), "kube-public".into()));
    assert_eq!(keys(&ci["data"]), set(&["jws-kubeconfig-abcdef", "jws-kubeconfig-ghijkl", "kubeconfig"]));
    let kubeconfig = ci["data"]["kubeconfig"].as_str().unwrap();
    for (id, secret) in [("abcdef", "0123456789abcdef"), ("ghijkl", "0123456789ghijkl")] {
        let jws = ci["data"][format!("jws-kubeconfig-{id}")].as_str().unwrap();
        let header = B64URL.encode(format!("{{\"alg\":\"HS256\",\"kid\":\"{id}\"}}"));
        let sig = openssl_hs256(secret, &format!("{header}.{}", B64URL.encode(kubeconfig)), dir);
        assert_eq!(jws, format!("{header}..{sig}"), "the JWS for {id}");
    }
    let ci_file = dir.join("cluster-info.conf");
    std::fs::write(&ci_file, kubeconfig).unwrap();
    let view = kubectl(dir, &["config", "view", "--raw", "-o", "json", "--kubeconfig", ci_file.to_str().unwrap()]);
    assert!(view.ok(), "{}", view.describe());
    let v: Value = serde_json::from_str(&view.stdout).unwrap();
    assert_eq!(v["clusters"][0]["name"], "");
    assert_eq!(v["clusters"][0]["cluster"]["server"], "https://api.mf.example:6443");
    let ca = B64.decode(v["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap()).unwrap();
    assert_eq!(ca, std::fs::read(dir.join("out/mf/state/pki/ca.crt")).unwrap());
    // client-go's shape, as kubeadm's clientcmd.Write puts it there: the bytes the JWS above sign
    // are byte for byte what `kubectl config view --raw` prints for them (server unquoted,
    // `contexts: null`, `users: null`).
    let raw = kubectl(dir, &["config", "view", "--raw", "--kubeconfig", ci_file.to_str().unwrap()]);
    assert!(raw.ok(), "{}", raw.describe());
    assert_eq!(kubeconfig, raw.stdout, "cluster-info's kubeconfig is not in client-go's shape");
    assert!(kubeconfig.contains("\n    server: https://api.mf.example:6443\n"), "{kubeconfig}");

    // RBAC (§10), 1.29+: with kubeadm:cluster-admins.
    let rbac: BTreeSet<(String, String, String, String)> = objects(&m.join("rbac.yaml")).iter().map(meta).collect();
    let crb = |n: &str| ("rbac.authorization.k8s.io/v1".to_string(), "ClusterRoleBinding".to_string(), n.to_string(), String::new());
    let role = |k: &str, n: &str, ns: &str| ("rbac.authorization.k8s.io/v1".to_string(), k.to_string(), n.to_string(), ns.to_string());
    let expected: BTreeSet<_> = [
        crb("kubeadm:kubelet-bootstrap"),
        crb("kubeadm:node-autoapprove-bootstrap"),
        crb("kubeadm:node-autoapprove-certificate-rotation"),
        role("ClusterRole", "kubeadm:get-nodes", ""),
        crb("kubeadm:get-nodes"),
        role("Role", "kubeadm:bootstrap-signer-clusterinfo", "kube-public"),
        role("RoleBinding", "kubeadm:bootstrap-signer-clusterinfo", "kube-public"),
        role("Role", "kubeadm:nodes-kubeadm-config", "kube-system"),
        role("RoleBinding", "kubeadm:nodes-kubeadm-config", "kube-system"),
        role("Role", "kubeadm:kubelet-config", "kube-system"),
        role("RoleBinding", "kubeadm:kubelet-config", "kube-system"),
        crb("kubeadm:cluster-admins"),
    ]
    .into_iter()
    .collect();
    assert_eq!(rbac, expected);
    for o in objects(&m.join("rbac.yaml")) {
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        let subjects: Vec<String> = o["subjects"]
            .as_array()
            .map(|a| a.iter().map(|s| format!("{}:{}", s["kind"].as_str().unwrap(), s["name"].as_str().unwrap())).collect())
            .unwrap_or_default();
        let role_ref = o["roleRef"]["name"].as_str().unwrap_or("").to_string();
        match name.as_str() {
            "kubeadm:kubelet-bootstrap" => assert_eq!(
                (role_ref.as_str(), subjects.as_slice()),
                ("system:node-bootstrapper", &["Group:system:bootstrappers:kubeadm:default-node-token".to_string()][..])
            ),
            "kubeadm:node-autoapprove-bootstrap" => {
                assert_eq!(role_ref, "system:certificates.k8s.io:certificatesigningrequests:nodeclient")
            }
            "kubeadm:node-autoapprove-certificate-rotation" => {
                assert_eq!(
                    (role_ref.as_str(), subjects.as_slice()),
                    ("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", &["Group:system:nodes".to_string()][..])
                )
            }
            "kubeadm:bootstrap-signer-clusterinfo" if o["kind"] == "RoleBinding" => assert_eq!(subjects, ["User:system:anonymous"]),
            "kubeadm:cluster-admins" => {
                assert_eq!((role_ref.as_str(), subjects.as_slice()), ("cluster-admin", &["Group:kubeadm:cluster-admins".to_string()][..]))
            }
            _ => {}
        }
    }

    // kubeadm-config: the ClusterConfiguration, read back by kubebundle's own strict loader.
    let kc = &objects(&m.join("kubeadm-config.yaml"))[0];
    assert_eq!(meta(kc), ("v1".into(), "ConfigMap".into(), "kubeadm-config".into(), "kube-system".into()));
    assert_eq!(keys(&kc["data"]), set(&["ClusterConfiguration"]));
    let cc = kc["data"]["ClusterConfiguration"].as_str().unwrap();
    let reread = format!("{cc}---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nnodes:\n- {{name: cp1, address: 10.6.0.1, roles: [control-plane, etcd]}}\n");
    let c = kubebundle::config::load_str(&reread, "kubeadm-config")
        .unwrap_or_else(|e| panic!("the stored ClusterConfiguration does not load: {e}"));
    assert_eq!((c.cluster_name.as_str(), c.kubernetes_version.text.as_str(), c.dns_domain.as_str()), ("mf", "v1.34.1", "mf.local"));
    assert_eq!(c.control_plane_endpoint.host_port(), "api.mf.example:6443");
    assert_eq!(c.service_subnets[0].to_string(), "10.112.0.0/12");

    // kubelet-config: the KubeletConfiguration, with exactly the fields we mean to set.
    let kl = &objects(&m.join("kubelet-config.yaml"))[0];
    assert_eq!(meta(kl), ("v1".into(), "ConfigMap".into(), "kubelet-config".into(), "kube-system".into()));
    assert_eq!(keys(&kl["data"]), set(&["kubelet"]));
    let k: Value = serde_saphyr::from_str(kl["data"]["kubelet"].as_str().unwrap()).unwrap();
    assert_eq!((k["apiVersion"].as_str(), k["kind"].as_str()), (Some("kubelet.config.k8s.io/v1beta1"), Some("KubeletConfiguration")));
    assert_eq!(
        keys(&k),
        set(&[
            "apiVersion",
            "authentication",
            "authorization",
            "cgroupDriver",
            "clusterDNS",
            "clusterDomain",
            "containerRuntimeEndpoint",
            "kind",
            "rotateCertificates",
            "serverTLSBootstrap",
            "staticPodPath",
            "tlsCertFile",
            "tlsPrivateKeyFile"
        ])
    );
    assert_eq!(k["clusterDNS"][0], "10.112.0.10");
    assert_eq!(k["clusterDomain"], "mf.local");
    assert_eq!(k["containerRuntimeEndpoint"], "unix:///var/run/containerd/containerd.sock");
    assert_eq!(k["rotateCertificates"], true);
    assert_eq!(k["serverTLSBootstrap"], false);
    assert_eq!(k["authentication"]["x509"]["clientCAFile"], "/etc/kubernetes/pki/ca.crt");
    assert_eq!(k["tlsCertFile"], "/var/lib/kubelet/pki/kubelet.crt");
}

#[test]
fn rbac_follows_the_version() {
    let names = |version: &str| -> BTreeSet<String> {
        let tmp = temp_dir("rbac");
        let m = generate(tmp.path(), version);
        objects(&m.join("rbac.yaml")).iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect()
    };
    let v128 = names("v1.28.9");
    assert!(!v128.contains("kubeadm:cluster-admins") && !v128.contains("kubeadm:apiserver-kubelet-client"));
    let v137 = names("v1.37.0");
    assert!(v137.contains("kubeadm:cluster-admins") && v137.contains("kubeadm:apiserver-kubelet-client"));
}
