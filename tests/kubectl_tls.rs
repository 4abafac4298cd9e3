//! Real kubectl against the generated apiserver certificate: a small TLS server (rustls) serves
//! apiserver.crt/key, requires client certificates signed by the cluster CA and answers
//! /version and /readyz, as kube-apiserver would for these requests.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS server on 127.0.0.1 with mutual TLS, stopped when dropped.
struct ApiServer {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Why handshakes failed, as the server saw it.
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    fn start(pki: &Path) -> ApiServer {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.join("apiserver.crt")).expect("apiserver.crt").collect::<Result<_, _>>().expect("certs");
        let key = PrivateKeyDer::from_pem_file(pki.join("apiserver.key")).expect("apiserver.key");
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(pki.join("ca.crt")).expect("ca.crt") {
            roots.add(ca.expect("ca cert")).expect("add root");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().expect("client verifier");
        let config = Arc::new(
            rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(certs, key).expect("server config"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (stop2, errors2) = (stop.clone(), errors.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (config, errors) = (config.clone(), errors2.clone());
                        std::thread::spawn(move || {
                            if let Err(e) = serve(sock, config) {
                                errors.lock().expect("lock").push(e);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ApiServer { port, stop, errors, thread: Some(thread) }
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("lock").clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.1 request over TLS: GET /version or /readyz, with the client's CN in a header.
fn serve(sock: std::net::TcpStream, config: Arc<rustls::ServerConfig>) -> Result<(), String> {
    sock.set_nonblocking(false).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut reader = BufReader::new(&mut tls);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).map_err(|e| format!("handshake or read failed: {e}"))?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 || line == "\r\n" {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_string();
    let (status, body) = match path.as_str() {
        "/readyz" | "/livez" | "/healthz" => ("200 OK", "ok".to_string()),
        "/version" => ("200 OK", r#"{"major":"1","minor":"34","gitVersion":"v1.34.1"}"#.to_string()),
        other => ("404 Not Found", format!("not found: {other}")),
    };
    let response =
        format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    tls.write_all(response.as_bytes()).map_err(|e| e.to_string())?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}

fn get_raw(scratch: &Path, kubeconfig: &Path, server: &str, path: &str) -> Run {
    kubectl(scratch, &["--kubeconfig", kubeconfig.to_str().unwrap(), "--server", server, "--request-timeout", "10s", "get", "--raw", path])
}

fn bundle(dir: &Path, name: &str) -> PathBuf {
    generate_live(dir, name, &live_config(name, &[("cp1", "127.0.0.1", "control-plane, etcd"), ("w1", "127.0.0.9", "worker")]))
}

#[test]
fn kubectl_talks_mutual_tls_to_the_apiserver_certificate() {
    let tmp = temp_dir("kubectl-tls");
    let dir = tmp.path();
    let cluster = bundle(dir, "tls-a");
    let root = cluster.join("nodes/cp1/etc/kubernetes");
    let server = ApiServer::start(&root.join("pki"));
    let url = server.url("127.0.0.1");

    for conf in ["admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"] {
        let r = get_raw(dir, &root.join(conf), &url, "/readyz");
        assert!(r.ok() && r.stdout.trim() == "ok", "{conf}: /readyz failed: {}", r.describe());
    }
    let v = get_raw(dir, &root.join("admin.conf"), &url, "/version");
    assert!(v.ok() && v.stdout.contains("\"gitVersion\""), "/version failed: {}", v.describe());
    assert!(server.errors().is_empty(), "the server refused a valid client: {:?}", server.errors());

    // A host that is not in the apiserver's SANs: kubectl refuses the server certificate.
    let r = get_raw(dir, &root.join("admin.conf"), &server.url("localhost"), "/readyz");
    assert!(!r.ok(), "kubectl accepted a host outside the SANs: {}", r.describe());
    assert!(r.stderr.contains("not localhost"), "wrong reason for the SAN failure: {}", r.describe());

    // A kubeconfig from another bundle: its CA does not know this server.
    let other = bundle(dir, "tls-b");
    let r = get_raw(dir, &other.join("nodes/cp1/etc/kubernetes/admin.conf"), &url, "/readyz");
    assert!(!r.ok(), "another bundle's kubeconfig was accepted: {}", r.describe());
    assert!(r.stderr.contains("certificate signed by unknown authority"), "wrong reason for the foreign CA: {}", r.describe());

    // The front-proxy client certificate is not a normal client certificate: the server refuses it.
    let pki = root.join("pki");
    let fp = dir.join("front-proxy.conf");
    std::fs::write(
        &fp,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    certificate-authority: {}\n    server: {url}\ncontexts:\n- name: c\n  context: {{cluster: c, user: fp}}\ncurrent-context: c\nusers:\n- name: fp\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            pki.join("ca.crt").display(),
            pki.join("front-proxy-client.crt").display(),
            pki.join("front-proxy-client.key").display()
        ),
    )
    .unwrap();
    let before = server.errors().len();
    let r = get_raw(dir, &fp, &url, "/readyz");
    assert!(!r.ok(), "the front-proxy client certificate was accepted as a client: {}", r.describe());
    assert!(r.stderr.contains("unknown certificate authority"), "wrong reason on the client side: {}", r.describe());
    let seen = wait_for(Duration::from_secs(5), || {
        server.errors().get(before..).and_then(|e| e.iter().find(|m| m.contains("UnknownIssuer")).cloned())
    });
    assert!(seen.is_some(), "the server did not refuse the front-proxy certificate as an unknown issuer: {:?}", server.errors());
}
