//! `cargo bench --bench bundle`: the physical floor (one key, per algorithm) and whole bundles.
//! A plain binary (harness = false) so it needs no extra crates; it prints a Markdown table.

use std::time::{Duration, Instant};

use kubebundle::clock::Clock;
use kubebundle::config::{load_str, KeyAlgorithm};
use kubebundle::pki::keys::Key;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn keygen_median(alg: KeyAlgorithm, samples: usize) -> Duration {
    median(
        (0..samples)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(Key::generate(alg).expect("keygen"));
                t.elapsed()
            })
            .collect(),
    )
}

fn config(alg: &str, workers: usize) -> String {
    let mut s = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.34.1\nencryptionAlgorithm: {alg}\n---\napiVersion: kubebundle.dev/v1alpha1\nkind: Inventory\nworkerJoin: certificate\nnodes:\n"
    );
    for i in 1..=3 {
        s += &format!("- {{name: cp{i}, address: 10.0.0.{i}, roles: [control-plane, etcd]}}\n");
    }
    for i in 0..workers {
        s += &format!("- {{name: w{i}, address: 10.{}.{}.{}, roles: [worker]}}\n", 1 + i / 65536, (i / 256) % 256, i % 256);
    }
    s
}

fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("| algorithm | keygen median |\n|---|---|");
    let mut floor = std::collections::BTreeMap::new();
    for (name, alg, n) in [
        ("RSA-2048", KeyAlgorithm::Rsa2048, 40),
        ("RSA-3072", KeyAlgorithm::Rsa3072, 10),
        ("ECDSA-P256", KeyAlgorithm::EcdsaP256, 2000),
        ("ECDSA-P384", KeyAlgorithm::EcdsaP384, 1000),
    ] {
        let m = keygen_median(alg, n);
        floor.insert(name, m);
        println!("| {name} | {:.3} ms |", m.as_secs_f64() * 1e3);
    }
    println!("\n| bundle | nodes | keys | wall | floor (keys × median ÷ {cores} cores) | ratio |\n|---|---|---|---|---|---|");
    let clock = Clock::from_sources(Some("2026-01-01T00:00:00Z"), None).expect("clock");
    for (alg, workers) in [("ECDSA-P256", 0), ("ECDSA-P256", 100), ("RSA-2048", 0), ("RSA-2048", 10)] {
        let cfg = load_str(&config(alg, workers), "bench").expect("bench config");
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let (_, bundle, _) = kubebundle::cli::build(&cfg, dir.path(), &clock, false).expect("generate");
        let wall = t.elapsed();
        // 3 CAs + sa, 12 leaves per stacked control plane (+ super-admin), 2 per worker.
        let keys = 4 + 3 * 12 + 1 + 2 * workers;
        let f = floor[alg].mul_f64(keys as f64 / cores as f64);
        println!(
            "| {alg} | {} | {keys} | {:.3} s | {:.3} s | {:.2} |",
            bundle.nodes.len(),
            wall.as_secs_f64(),
            f.as_secs_f64(),
            wall.as_secs_f64() / f.as_secs_f64()
        );
    }
}
