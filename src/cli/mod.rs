//! The command line: clap types, one function per subcommand calling the library (the generate
//! pipeline is `bundle::pipeline`), exit codes and printing. The only module that prints.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

mod report;
use report::OutputArg;

use crate::bundle::materialize;
use crate::bundle::output;
use crate::bundle::pipeline::{self, GenerateError};
use crate::clock::Clock;
use crate::config::{self, Config, ConfigError};

#[derive(Parser)]
#[command(
    name = "kubebundle",
    version,
    about = "Make every certificate, key, kubeconfig and token a kubeadm-style cluster needs, offline, packed one tarball per node.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The exit codes of every command (each command's --help says its own).
const EXIT_CODES: &str = "Exit codes (every command): 0 success; 1 the command ran and refused or failed (lock held, state \
refused, a write failed, `verify` found errors, `generate --check` found drift); 2 the input is wrong (a bad flag or \
value, a config or profile error, a path that is not what the command takes; `generate --check`: any error). \
`certs check-expiration`: 0 all fine, 3 a warning, 4 expired or broken, 2 the input is wrong.";

#[derive(Subcommand)]
enum Command {
    /// Generate the whole bundle: state (CAs, sa, encryption key, tokens, leaf keys), one .tar.gz per
    /// node (and its tree with --unpacked), join.txt, discovery.conf, plan.json and the bootstrap-token Secrets.
    /// Prints the join commands; -o json prints a GenerateReport instead (what was written, kept and
    /// removed; README "Machine-readable output").
    #[command(after_help = "Exit codes: 0 written (--check: up to date); 1 refused or failed: lock held, a directory \
kubebundle did not write or that holds another cluster, state refused, a CA key `ca csr` made that still waits for \
its signed certificate (`ca import` it), a write failed, external-CA mode waiting for signed certificates (the keys \
and CSRs were written: sign the CSRs, `import-signed` them, generate again) (--check: files would change, or \
certificates wait); \
2 usage, config or profile error, an Inventory that drops the recorded init node without naming the new one \
(--check: any error, such as an unreadable state).")]
    Generate(GenerateArgs),
    /// Print every artifact per node with its subject and SANs (no secrets, writes nothing).
    #[command(after_help = "Exit codes: 0 printed; 1 the output could not be written; 2 usage, config or profile error.")]
    Plan(PlanArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Certificate lifecycle.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Bootstrap tokens of a bundle (OUT/<clusterName>): their Secret manifests, join.txt and the
    /// workers' bootstrap-kubelet.conf are kept in step.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The bundle's state (OUT/<clusterName>/state): its CAs, service-account key and encryption
    /// keys, which state/manifest.yaml records and every run checks.
    #[command(subcommand)]
    State(StateCommand),
    /// The cluster's CAs: bring your own (a corporate root, or an intermediate under one).
    #[command(subcommand)]
    Ca(CaCommand),
    /// External-CA mode: take back the certificates your CA signed from the CSRs generate (or
    /// certs renew) wrote (OUT/<clusterName>/csr/<node>/..., kubeadm's generate-csr layout). Give
    /// the signed files (PEM, named like the CSRs: <node>/<base>.crt, or a directory mirroring csr/)
    /// or Vault -format=json responses of <pki>/sign/<role>. Each is checked against its CSR: the
    /// same public key, subject and SANs (all of them), the usages the certificate needs, signed by
    /// the imported CA; one refusal names the file and what differs and writes nothing. Accepted ones
    /// go into state/leaves.json (one transaction, under the bundle's lock); the next generate packs
    /// them. With --dir a node tree (/, /etc/kubernetes, an extracted root) where `certs renew` wrote
    /// CSRs: each is matched to the tree's certificate with the same key, checked against it the same
    /// way (signed by the tree's CA) and put in its place (the .crt, or a kubeconfig's
    /// client-certificate-data), backed up beside the tree, each file replaced atomically.
    #[command(
        after_help = "Exit codes: 0 recorded (or already there); 1 refused or failed: a certificate for another key (or a Vault issue/ response, whose key Vault made), another subject, a lost or extra SAN, a missing usage, not signed by the imported CA (a node tree: its CA; an expired one), lock held, state refused, a write failed; 2 usage error, a file that cannot be read or holds no certificate, a --dir that is neither a bundle nor a node tree kubebundle knows. On a node tree, 0: put in place (or already there)."
    )]
    ImportSigned(ImportSignedCli),
    /// Adopt a running cluster kubebundle did not make: build OUT/<clusterName>/state from one
    /// control plane's tree (--dir: its root, /etc/kubernetes or /etc/k8s, or an extracted
    /// tarball; the layout recognised as `certs check-expiration` does), exactly as generate would
    /// have made it: the CAs (a CA whose key the tree lacks is recorded as an external CA; a CA
    /// file carrying its chain keeps it), the service-account key pair (sa.pub derived when
    /// absent), the keys (aescbc, aesgcm, secretbox) of the EncryptionConfiguration the kube-apiserver reads
    /// (--encryption-provider-config in its static pod, unit or kubeadm patch) and the bootstrap
    /// tokens the tree holds; and, when the config names the tree's node, its own leaf
    /// certificates that are what the plan wants (generate packs them unchanged; the others it
    /// issues anew, and adopt lists both). state/adopted.yaml records which file each came from
    /// (with its SHA-256); the same table is printed, never a secret. The tree is only read. The
    /// config must describe the cluster (clusterName, the API server endpoint, the kubernetes
    /// Service IP and stacked or external etcd are checked against the tree); its nodes are the
    /// cluster's, and a later generate adds the nodes you add, signed by the cluster's own CAs.
    #[command(after_help = "Exit codes: 0 adopted; 1 refused or failed: OUT/<clusterName> already holds a bundle \
(without --force), a file of the tree cannot be read, lock held, a write failed; 2 usage or config error, a --dir that \
is not a control plane's tree (no layout, no API server certificate, a CA or sa key missing), a config that does not \
describe the tree (clusterName, endpoint, serviceSubnet, etcd: both values named), a file that is not what its place \
says (a key that is not its certificate's, an sa.pub of another key, an encryption configuration of another shape than \
generate writes), a cluster without encryption at rest unless --new-encryption-key.")]
    Adopt(AdoptCli),
    /// Replace a long-lived secret in phases, each phase one transaction like generate that writes
    /// the whole bundle for it and prints what to roll out and restart, in order: `start` (the new
    /// material is accepted everywhere, the old one still encrypts or signs), `switch` (the new one
    /// encrypts or signs, the old one is still accepted), `finish` (the old one is removed from every
    /// node and archived in OUT/kubebundle-backup-<time>/state/). `abort` after start (nothing
    /// encrypted or signed with the new material yet) goes back and archives the new material. The
    /// phase is kept in state/rotations.yaml; generate during a rotation packs its phase's files.
    #[command(subcommand, after_help = ROTATE_EXIT_CODES)]
    Rotate(RotateCommand),
    /// Audit a bundle directory, a node tarball or a node root: chains, keys, SANs, EKUs,
    /// expiry (CAs too), file modes, least privilege, kubeconfig servers and the discovery hash.
    /// Prints a table of findings (-o json: a VerifyReport, README "Machine-readable output");
    /// exits 1 on any error.
    #[command(after_help = "Exit codes: 0 no errors (warnings allowed); 1 errors found, or a file could not be read; \
2 usage error, or a path that is not a bundle, a node tarball or a node root.")]
    Verify(VerifyCli),
    /// Write each node's files as first-boot provisioning data, read from its tarball in memory:
    /// cloud-init user-data (`#cloud-config` with write_files: path, permissions, owner root:root,
    /// content b64 or gz+b64) or an Ignition config (spec 3.3.0: storage.files as data URLs, gzip
    /// where smaller, storage.directories), to <--out>/<format>/<node>.yaml|.ign (default
    /// OUT/<clusterName>/export/): directories 0700, files 0600, since they hold the node's keys;
    /// nothing secret is printed. A file over 16 KiB (AWS EC2's user-data limit) is warned about.
    /// Into OUT/<clusterName>/export/ (no --out) they are recorded (export/<format>/.kubebundle-export.json),
    /// and every later generate writes them again from its new tarballs with the same options; with
    /// Inventory.export generate writes every node's itself.
    #[command(after_help = "Exit codes: 0 written; 1 a tarball could not be read, lock held, a write failed; 2 usage \
error, a --dir that is not a bundle, a --node the bundle does not have.")]
    Export(ExportCli),
    /// Print the shell completion script for SHELL on standard output. Load it in the running
    /// shell (bash: `source <(kubebundle completion bash)`) or install it where the shell looks
    /// (README "Shell completions and man pages").
    #[command(after_help = "Exit codes: 0 printed; 1 the output could not be written; 2 usage error (an unknown shell).")]
    Completion(CompletionCli),
    /// Write the manual pages: kubebundle.1 and one page per subcommand (kubebundle-generate.1,
    /// kubebundle-certs-renew.1, ...) into --out DIR; without --out, print kubebundle.1 on
    /// standard output (`kubebundle man | man -l -`).
    #[command(after_help = "Exit codes: 0 written or printed; 1 a page could not be written; 2 usage error.")]
    Man(ManCli),
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    CloudInit,
    Ignition,
}

#[derive(Args)]
struct ExportCli {
    /// cloud-init (user-data, #cloud-config) or ignition (an Ignition 3.3.0 config).
    format: ExportFormat,
    /// The bundle: OUT/<clusterName>.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Only this node (repeat for more); every node of the bundle by default.
    #[arg(long = "node", value_name = "NODE")]
    nodes: Vec<String>,
    /// Where <format>/<node>.<ext> go (default: DIR/export).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also run the node's first-boot step: `kubeadm init|join --config ...` (kubeadm profile), or
    /// `systemctl daemon-reload` and `systemctl enable --now` its units (hardway, binary). cloud-init:
    /// a runcmd; Ignition: the units enabled (kubeadm: a one-shot kubebundle-kubeadm.service). Off by default.
    #[arg(long)]
    runcmd: bool,
    /// cloud-init only: write the user-data gzip-compressed whole (<node>.yaml.gz; cloud-init reads it), for
    /// user-data limits such as AWS EC2's 16 KiB.
    #[arg(long)]
    gzip: bool,
}

#[derive(Args)]
struct CompletionCli {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: CompletionShell,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

#[derive(Args)]
struct ManCli {
    /// Write every page into this directory (made if missing) instead of printing kubebundle.1.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

const ROTATE_EXIT_CODES: &str = "Exit codes: 0 the phase was written (status: printed); 1 refused or failed, nothing \
written: a phase out of order (switch before start, finish before switch), a start while a rotation of the same material \
is open, an abort after switch, lock held, state refused, a write failed; 2 usage or config error, or an --out that \
holds no bundle of the config's cluster.";

#[derive(Subcommand)]
enum RotateCommand {
    /// The encryption-at-rest key (state/encryption.yaml, every control plane's EncryptionConfiguration):
    /// start = a new key listed second (the old one still encrypts), switch = the new key first (the
    /// old one still decrypts; then rewrite every Secret, as printed), finish = the old key removed.
    #[command(after_help = ROTATE_EXIT_CODES)]
    Encryption(RotateEncryptionCli),
    /// The service-account signing key (state/pki/sa.key): start = the API servers also accept the
    /// next key (sa-next.pub, a second --service-account-key-file), switch = the API servers and the
    /// controller-manager sign with it (the old public key stays accepted as sa-previous.pub),
    /// finish = the old public key dropped, once the tokens it signed were replaced (switch says how long to wait).
    #[command(after_help = ROTATE_EXIT_CODES)]
    Sa(RotateCli),
    /// A CA (ca, front-proxy-ca or etcd-ca): start = a new CA (state/pki/<ca>-next.crt), trusted
    /// beside the old one by every trust anchor (CA files, kubeconfigs, cluster-info; join.txt pins
    /// both); switch = every certificate issued again by the new CA (same keys unless --new-key),
    /// the controller-manager signs with it, the old one still trusted; finish = the old CA dropped
    /// from every trust anchor (archived). An external or imported intermediate CA is refused.
    #[command(after_help = ROTATE_EXIT_CODES)]
    Ca(RotateCaCli),
    /// Each material's rotation: its phase and since when (or the last one, finished or aborted).
    #[command(
        after_help = "Exit codes: 0 printed; 1 the state cannot be read; 2 usage or config error, or an --out that holds no bundle of the config's cluster."
    )]
    Status(RotateStatusCli),
}

#[derive(Clone, Copy, ValueEnum)]
enum RotateStep {
    Start,
    Switch,
    Finish,
    Abort,
}

#[derive(Args)]
struct RotateCli {
    /// The phase: start, switch, finish (in this order), or abort (after start only).
    #[arg(value_enum)]
    step: RotateStep,
    #[command(flatten)]
    config: ConfigArg,
    /// Output directory of generate; the bundle is DIR/<clusterName>/.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    /// The run's clock (RFC 3339). SOURCE_DATE_EPOCH also sets it.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Args)]
struct RotateEncryptionCli {
    #[command(flatten)]
    at: RotateCli,
    /// start only: the new key's provider (default: the Inventory's encryptionProvider, aescbc).
    #[arg(long, value_enum)]
    provider: Option<ProviderArg>,
}

#[derive(Args)]
struct RotateCaCli {
    /// The CA to replace.
    #[arg(value_enum)]
    ca: CaArg,
    #[command(flatten)]
    at: RotateCli,
    /// start only: the new CA's key algorithm (default: the config's encryptionAlgorithm).
    #[arg(long, value_name = "ALGORITHM", value_parser = parse_algorithm)]
    algorithm: Option<crate::config::KeyAlgorithm>,
    /// switch only: issue every certificate again with a new key (default: each keeps its key).
    #[arg(long)]
    new_key: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CaArg {
    Ca,
    FrontProxyCa,
    EtcdCa,
}

fn parse_algorithm(text: &str) -> Result<crate::config::KeyAlgorithm, String> {
    crate::config::KeyAlgorithm::ALL
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(text))
        .map(|(_, a)| *a)
        .ok_or_else(|| format!("one of {}", crate::config::KeyAlgorithm::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderArg {
    Aescbc,
    Aesgcm,
    Secretbox,
}

#[derive(Args)]
struct RotateStatusCli {
    #[command(flatten)]
    config: ConfigArg,
    /// Output directory of generate; the bundle is DIR/<clusterName>/.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
}

#[derive(Args)]
struct ImportSignedCli {
    /// The bundle (OUT/<clusterName>), or a node tree `certs renew` wrote CSRs in: a node's root
    /// (/ or an extracted tarball), /etc/kubernetes or /etc/k8s.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// A node tree's layout: a built-in profile (kubeadm, hardway, binary) or a profile file [default: recognised].
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<PathBuf>,
    /// Signed certificates: files (PEM or Vault JSON) or directories (their .crt, .pem and .json files).
    #[arg(required = true)]
    signed: Vec<PathBuf>,
}

#[derive(Args)]
struct AdoptCli {
    /// A control plane's tree: its root (/ or an extracted tarball), /etc/kubernetes or /etc/k8s.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The cluster's config (required here): kubeadm's ClusterConfiguration/InitConfiguration and an
    /// Inventory of its nodes; --profile and --init-node as for generate.
    #[command(flatten)]
    config: ConfigArg,
    /// The layout of DIR: a built-in profile (kubeadm, hardway, binary) or a profile file [default: recognised].
    #[arg(long, value_name = "NAME|FILE")]
    tree_profile: Option<PathBuf>,
    /// Output directory; the state goes to DIR/<clusterName>/state/.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    /// Replace the state of an existing bundle (the old state is kept in OUT/kubebundle-backup-<time>/state/).
    #[arg(long)]
    force: bool,
    /// The cluster has no encryption at rest: record a new aescbc key anyway (every running control
    /// plane must then take the bundle's encryption configuration before a new one starts).
    #[arg(long)]
    new_encryption_key: bool,
    /// The certificates above the tree's CAs, up to their roots (PEM, any order): an intermediate
    /// CA's root is on no node (the intermediates its serving certificates carry are taken from the tree).
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,
    /// The clock (RFC 3339) instead of now: when the secrets are recorded. SOURCE_DATE_EPOCH also sets it.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// List every certificate (files and kubeconfig client certs) and CA with its expiry, like
    /// `kubeadm certs check-expiration`, offline. Exit code: 0 fine, 3 something expires within
    /// --warn-within, 4 something expired or a chain is broken.
    #[command(after_help = "Exit codes: 0 all fine; 3 something expires within --warn-within (or is not valid yet); \
4 something expired, is unreadable or does not verify against its CA; 2 usage error, or a --dir that cannot be read \
or holds no certificates.")]
    CheckExpiration(CheckExpirationCli),
    /// Re-issue certificates in place with the existing CA, keeping each one's subject, SANs,
    /// usages and key (kubeadm-style, no config needed): `all`, kubeadm names (apiserver,
    /// admin.conf, etcd-server, ...), or a CA (ca, front-proxy-ca, etcd-ca), which is re-issued from
    /// its own key so the discovery hash and every leaf stay valid. Everything it touches is
    /// first copied to DIR/../kubebundle-backup-<time>/; node tarballs of a bundle are re-packed.
    /// A certificate whose CA is external (its certificate is there, its key is not: kubeadm's
    /// external-CA mode) is not signed: a CSR for its current key, with its subject, SANs and
    /// usages, is written instead (listed) — on a bundle to OUT/<cluster>/csr/<node>/ (then
    /// `import-signed` and `generate`), on a node tree beside it as kubeadm's `certs generate-csr`
    /// places them (pki/<name>.csr, <name>.conf.csr) or in --csr-dir (then `import-signed --dir
    /// TREE`); the others are renewed in the same run.
    #[command(after_help = "Exit codes: 0 renewed (--dry-run: listed); 1 refused or failed: a CA without its key, a \
certificate that would outlive its CA, lock held, a file that cannot be read or written; or, like generate, waiting: an \
external CA's certificates got CSRs instead of new certificates (written and listed; sign them, then import-signed); \
2 usage error (bad --validity, unknown certificate, one the tree does not hold, --csr-dir on a bundle), or a --dir that \
is not a directory or matches no layout.")]
    Renew(RenewCli),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a bootstrap token (uniform [a-z0-9] from the system CSPRNG) and its Secret manifest.
    #[command(after_help = TOKEN_EXIT_CODES)]
    Create(TokenCreateCli),
    /// Show each token's id, time left, expiry, usages, description and groups (the secret only
    /// with --show-token); -o json: a BootstrapTokenList (README "Machine-readable output").
    #[command(after_help = "Exit codes: 0 listed; 1 the state cannot be read; 2 usage error, or a --dir that is not a bundle.")]
    List(TokenListCli),
    /// Remove a token and its Secret manifest.
    #[command(after_help = TOKEN_EXIT_CODES)]
    Delete(TokenDeleteCli),
}

const TOKEN_EXIT_CODES: &str = "Exit codes: 0 done; 1 refused or failed: the last token workers join with, a \
token the config defines, lock held, state refused, a write failed; 2 usage error (bad --ttl, usage or group, unknown \
token id), or a --dir that is not a bundle.";

#[derive(Subcommand)]
enum StateCommand {
    /// Put back every secret state/manifest.yaml records that is missing, unreadable or changed,
    /// from a verified copy: the backups beside the bundle (kubebundle-backup-*/state/), then the
    /// node tarballs (each copy checked against the recorded SHA-256). A state that lost its
    /// manifest too is rebuilt from the control planes' tarballs (every copy must agree), with its
    /// leaf records and tokens. Files it replaces are kept in a new kubebundle-backup-<time>/.
    /// A later generate with the same config writes the same tarballs.
    Restore(StateRestoreCli),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Put a CA made elsewhere, with its key, into the state of the cluster the config names
    /// (OUT/<clusterName>/state, made when there is none yet), so the next generate signs every
    /// certificate of that CA with it. --cert takes the CA's PEM (followed by its chain or key if
    /// you like) or Vault's -format=json response (certificate, issuing_ca, ca_chain, private_key);
    /// --key and --chain may then be left out. Refused, writing nothing: a certificate that is not a
    /// CA with keyCertSign, a key that is not its own or that kubeadm cannot load (Ed25519), a chain
    /// that does not verify up to a self-signed root, a CA that ends before the certificates
    /// generate would issue (certificateValidityPeriod), a state whose CA already signed a bundle
    /// (--force replaces it, keeping the old state in OUT/kubebundle-backup-<time>/state/). Without
    /// --key (and no key in --cert), the key the state holds is used: the one `ca csr` made, whose
    /// CSR was signed into --cert; a certificate for another key is refused. With no key there
    /// either, the CA is imported without its key (external-CA mode): the state never holds it,
    /// generate writes a CSR per leaf of that CA to OUT/<clusterName>/csr/<node>/ for your signer,
    /// and `import-signed` takes the signed certificates back.
    #[command(after_help = "Exit codes: 0 imported (or already in the state); 1 refused or failed: the state's CA \
already signed a bundle (without --force), lock held, state refused, a \
write failed; 2 usage or config error, or an input file that cannot be read or is not a usable CA (not a CA, not its key, \
a broken chain, an Ed25519 key, base64 DER, a CA that ends before the certificates it would sign, a certificate for \
another key than the one waiting in the state).")]
    Import(CaImportCli),
    /// Make the CA's key in the state of the cluster the config names (OUT/<clusterName>/state,
    /// made when there is none yet; the key of the config's encryptionAlgorithm, 0600, recorded in
    /// state/manifest.yaml) and write a CSR for an intermediate CA to OUT/<clusterName>/csr/<CA>.csr
    /// (CN as kubeadm names the CA: kubernetes, front-proxy-ca, etcd-ca; it requests basicConstraints
    /// CA:TRUE and keyUsage keyCertSign, cRLSign, digitalSignature, both critical). Have it signed by
    /// your root (openssl ca, Vault pki/root/sign-intermediate, cfssl sign), then `ca import <CA>
    /// --cert signed.crt --chain root.crt` takes the certificate for the key waiting in the state.
    /// Run again before that, it writes the same CSR for the same key. Until the import, generate
    /// refuses (remove the waiting key to let it make a CA of its own).
    #[command(after_help = "Exit codes: 0 written (or already there: the same CSR for the same key); 1 refused or \
failed: the state already holds that CA's certificate (replacing a CA is rotation or generate --force), lock held, state \
refused, a write failed; 2 usage or config error, etcd-ca when the config's etcd is external.")]
    Csr(CaCsrCli),
}

#[derive(Args)]
struct CaCsrCli {
    /// Which CA: the cluster CA, the front-proxy CA or the etcd CA.
    #[arg(value_enum)]
    which: CaName,
    #[command(flatten)]
    config: ConfigArg,
    /// Output directory; the state is DIR/<clusterName>/state/, the CSR DIR/<clusterName>/csr/<CA>.csr.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    /// The clock (RFC 3339) instead of now: when the key is recorded in the manifest. SOURCE_DATE_EPOCH also sets it.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CaName {
    Ca,
    FrontProxyCa,
    EtcdCa,
}

#[derive(Args)]
struct CaImportCli {
    /// Which CA: the cluster CA, the front-proxy CA or the etcd CA.
    #[arg(value_enum)]
    which: CaName,
    /// The CA certificate: PEM (the CA first; its chain and key may follow) or Vault's -format=json response.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// The CA's private key (PEM: PKCS#1, SEC1 or PKCS#8), unless --cert holds it.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The certificates above the CA, up to its self-signed root (PEM), unless --cert holds them.
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
    /// Output directory; the state is DIR/<clusterName>/state/.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    /// Replace a CA that already signed the bundle (the old state is kept in a backup; every node must be redeployed).
    #[arg(long)]
    force: bool,
    /// The clock (RFC 3339) instead of now: the CA must outlive certificates issued then. SOURCE_DATE_EPOCH also sets it.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Args)]
struct StateRestoreCli {
    /// The bundle: OUT/<clusterName>.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Take copies only from here: a backup or state directory, a copy of the bundle, or a node tarball.
    #[arg(long, value_name = "PATH")]
    from: Option<PathBuf>,
    /// The clock (RFC 3339) instead of now (names the backup and stamps what it records).
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Args)]
struct TokenDirCli {
    /// The bundle: OUT/<clusterName>.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The clock (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Args)]
struct TokenListCli {
    #[command(flatten)]
    at: TokenDirCli,
    #[command(flatten)]
    output: OutputArg,
    /// Also show each whole token, <id>.<secret> (it lets anyone join a node): the TOKEN column, or `token` in JSON.
    #[arg(long)]
    show_token: bool,
}

#[derive(Args)]
struct TokenCreateCli {
    #[command(flatten)]
    at: TokenDirCli,
    /// How long the token is valid (Go duration); 0 never expires.
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// A note stored in the Secret: one line of printable text, clipped at 256 characters.
    #[arg(long)]
    description: Option<String>,
    /// Extra groups, comma separated [default: system:bootstrappers:kubeadm:default-node-token].
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Usages, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "signing,authentication")]
    usages: Vec<String>,
    /// Print the kubeadm join commands that use the new token (they hold the token).
    #[arg(long)]
    print_join_command: bool,
}

#[derive(Args)]
struct TokenDeleteCli {
    /// The token's id (the part before the dot).
    id: String,
    #[command(flatten)]
    at: TokenDirCli,
}

#[derive(Args)]
struct RenewCli {
    /// `all`, certificate names, or a CA name.
    #[arg(required = true, value_name = "all|NAME")]
    targets: Vec<String>,
    /// A node's root (/ or an extracted tarball), /etc/kubernetes or /etc/k8s, a kubebundle bundle (OUT/<clusterName>) or node tree.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The layout of DIR: a built-in profile (kubeadm, hardway, binary) or a profile file [default: recognised].
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<PathBuf>,
    /// Replace the private keys too (same algorithm and size) instead of keeping them.
    #[arg(long)]
    new_key: bool,
    /// New validity as a Go duration [default: 8760h for certificates, 87600h for CAs].
    #[arg(long, value_name = "DURATION")]
    validity: Option<String>,
    /// Say what would be renewed; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The clock (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// Node trees with an external CA: write the CSRs into DIR (created 0700; laid out like a
    /// bundle's csr/<node>/, relative to /etc/kubernetes: pki/apiserver.csr, admin.conf.csr)
    /// instead of beside each certificate in the tree (kubeadm's generate-csr layout); like
    /// kubeadm's former `certs renew --csr-only --csr-dir`.
    #[arg(long, value_name = "DIR")]
    csr_dir: Option<PathBuf>,
}

#[derive(Args)]
struct CheckExpirationCli {
    /// A node's root (/ or an extracted tarball), /etc/kubernetes or /etc/k8s, a kubebundle bundle (OUT/<clusterName>), node tree or state.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The layout of DIR: a built-in profile (kubeadm, hardway, binary) or a profile file [default: recognised].
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<PathBuf>,
    /// Output format; prometheus writes node-exporter textfile lines (expiry as unix seconds).
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: crate::lifecycle::expiry::Format,
    /// Warn about certificates that expire within this time: whole days (30d) or a Go duration (720h, 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    warn_within: String,
    /// Check at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Args)]
struct VerifyCli {
    /// OUT/<clusterName>, OUT/<clusterName>/nodes/<node>.tar.gz, or an extracted node root.
    path: PathBuf,
    /// Check expiry at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// Warn about certificates that expire within this time: whole days (30d) or a Go duration (720h, 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "720h")]
    warn_within: String,
    /// Accept node tarballs kubebundle did not pack (no digest in their gzip header); every file
    /// of such a tarball that is not in the plan is then an error.
    #[arg(long)]
    foreign: bool,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Args)]
struct ConfigArg {
    /// Multi-document YAML: kubeadm ClusterConfiguration/InitConfiguration and a kubebundle
    /// Inventory. Without it the embedded example is used (see `config print-defaults`).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where files go: a built-in profile (kubeadm, hardway, binary) or a profile file. Overrides Inventory.profile.
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<String>,
    /// The control plane that runs `kubeadm init` and holds super-admin.conf. Overrides
    /// Inventory.initNode; a bundle keeps the one it recorded unless told so (README "The init node").
    #[arg(long, value_name = "NODE")]
    init_node: Option<String>,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Output directory; the bundle goes to DIR/<clusterName>/.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    /// The run's clock (RFC 3339), e.g. 2026-01-01T00:00:00Z. SOURCE_DATE_EPOCH also sets it.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// Replace the whole long-lived state (CAs, sa key pair, encryption key, tokens) instead of
    /// reusing it: every node must be redeployed, service-account tokens and encrypted Secrets are
    /// lost. The old state is kept in OUT/kubebundle-backup-<time>/state/. A state that lost a
    /// secret is better mended with `kubebundle state restore`.
    #[arg(long, conflicts_with = "check")]
    force: bool,
    /// Write nothing: list every file a run would add, change or remove, and exit 1 if there is
    /// any (drift detection in CI; give the same --now or SOURCE_DATE_EPOCH as the run that wrote it).
    /// Text only.
    #[arg(long, conflicts_with = "output")]
    check: bool,
    /// Test clusters only: derive every key, token and secret the state lacks from the 32-byte
    /// seed in FILE (raw, or 64 hex characters), so two machines make the same bundle. Whoever has
    /// the seed has every key. Needs --insecure-deterministic and a fixed clock (--now or SOURCE_DATE_EPOCH).
    #[arg(long, value_name = "FILE")]
    seed_file: Option<PathBuf>,
    /// Acknowledge that --seed-file makes every secret of the cluster derivable from the seed.
    #[arg(long)]
    insecure_deterministic: bool,
    /// Also write each node's files unpacked, as nodes/<node>/ beside its tarball (for reading
    /// them in place; costs a directory tree per node).
    #[arg(long)]
    unpacked: bool,
    /// -o json only: put the join commands in the report (joinCommands; they hold the join
    /// token). The text output always prints them, as join.txt holds them.
    #[arg(long)]
    print_join_command: bool,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    output: Format,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the embedded example config (3 control planes with stacked etcd, 2 workers).
    #[command(after_help = "Exit codes: 0 printed; 1 the output could not be written; 2 usage error.")]
    PrintDefaults,
}

/// A command's failure. Exit codes (`exit_code`, README "Exit codes"): 1 the command ran and refused
/// or failed, 2 the input is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Clock(#[from] crate::clock::ClockError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error(transparent)]
    Verify(#[from] crate::audit::verify::VerifyError),
    #[error(transparent)]
    Expiry(#[from] crate::lifecycle::expiry::ExpiryError),
    #[error(transparent)]
    Renew(#[from] crate::lifecycle::renew::RenewError),
    #[error(transparent)]
    Token(#[from] crate::lifecycle::tokens::TokenError),
    #[error(transparent)]
    Restore(#[from] crate::bundle::state::restore::RestoreError),
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    #[error(transparent)]
    Rotate(#[from] crate::lifecycle::rotate::RotateError),
    /// generate in external-CA mode: CSRs written, signed certificates awaited (exit 1).
    #[error("{0}")]
    Awaiting(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
    #[error("{count} file(s) of {dir} would change (listed on stdout)\n  hint: run generate without --check to write them, or find what changed the config or the state")]
    Drift { dir: String, count: usize },
}

impl CliError {
    /// 2 when the input is wrong (`is_input_error`), else 1. `generate --check` maps every error
    /// but drift to 2 (see `main`); check-expiration's 3 and 4 come from its report, not from here.
    pub fn exit_code(&self) -> i32 {
        if self.is_input_error() {
            2
        } else {
            1
        }
    }

    /// The input is wrong: a usage error (a bad flag or value, a bad --now), a config or profile
    /// error, or a path that is not what the command takes. Everything else is a refusal or a
    /// failure of a command that ran (exit 1): a new error is one unless it is listed here.
    pub fn is_input_error(&self) -> bool {
        use crate::audit::verify::VerifyError;
        use crate::bundle::state::StateError;
        use crate::lifecycle::renew::RenewError as R;
        use crate::lifecycle::tokens::TokenError;
        use output::OutputError::DanglingLink;
        match self {
            CliError::Usage(_) | CliError::Clock(_) | CliError::Config(_) => true,
            CliError::Generate(GenerateError::Profile(_) | GenerateError::Materialize(materialize::MaterializeError::Profile(_))) => true,
            // The config asks for something the run's clock makes impossible.
            CliError::Generate(GenerateError::State(StateError::Config(_))) => true,
            // The Inventory drops the init node or every etcd member without saying what replaces it.
            CliError::Generate(GenerateError::Membership(crate::bundle::membership::MembershipError::Refused(_))) => true,
            CliError::Verify(VerifyError::NotABundle { .. }) => true,
            CliError::Verify(VerifyError::Read { source, .. }) => source.kind() == std::io::ErrorKind::NotFound,
            // Every check-expiration error is about its --dir (its own codes are 0, 3 and 4).
            CliError::Expiry(_) => true,
            CliError::Renew(
                R::NotATree { .. }
                | R::Unrecognised { .. }
                | R::Profile(_)
                | R::NoTargets
                | R::UnknownTarget { .. }
                | R::Missing { .. }
                | R::Validity { .. }
                | R::CsrDirOnBundle { .. },
            ) => true,
            CliError::Token(TokenError::NotABundle { .. } | TokenError::Usage(_)) => true,
            CliError::Restore(crate::bundle::state::restore::RestoreError::NotABundle { .. }) => true,
            CliError::Lifecycle(e) => e.is_input_error(),
            CliError::Rotate(crate::lifecycle::rotate::RotateError::Usage(_) | crate::lifecycle::rotate::RotateError::NotABundle(_)) => {
                true
            }
            CliError::Rotate(crate::lifecycle::rotate::RotateError::Generate(
                GenerateError::Profile(_) | GenerateError::Materialize(materialize::MaterializeError::Profile(_)),
            )) => true,
            // A path that is not what the command takes: a link to nothing.
            CliError::Output(DanglingLink { .. })
            | CliError::Generate(GenerateError::Output(DanglingLink { .. }))
            | CliError::Renew(R::Output(DanglingLink { .. }))
            | CliError::Token(TokenError::Output(DanglingLink { .. })) => true,
            _ => false,
        }
    }
}

/// Standard output and error. A reader that went away (`kubebundle verify DIR | head -1`) ends
/// the output quietly: the rest is dropped, nothing is said, and the command ends as it would
/// have. Any other error writing standard output is a failure (a full disk must not pass for a
/// complete listing).
mod say {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

    pub fn out(text: &str) -> Result<(), super::CliError> {
        if STDOUT_GONE.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut o = std::io::stdout().lock();
        match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                STDOUT_GONE.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(super::CliError::Other(format!("cannot write to standard output: {}", crate::util::io_words(&e)))),
        }
    }

    /// One line on standard error; if that is gone too there is no one left to tell.
    pub fn err(line: &str) {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(line.as_bytes()).and_then(|()| e.write_all(b"\n"));
    }
}

pub fn main() -> i32 {
    // Before any thread starts: SIGINT, SIGTERM and SIGHUP remove this run's private directories.
    output::handle_signals();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    // `generate --check` tells drift (1) from breakage (2): every other error exits 2.
    let check = matches!(&cli.command, Command::Generate(a) if a.check);
    let result = match cli.command {
        Command::Generate(a) => generate(a).map(|()| 0),
        Command::Plan(a) => print_plan(a).map(|()| 0),
        Command::Verify(a) => verify(a).map(|()| 0),
        Command::Certs(CertsCommand::CheckExpiration(a)) => check_expiration(a),
        Command::Certs(CertsCommand::Renew(a)) => renew(a).map(|()| 0),
        Command::Token(t) => token(t).map(|()| 0),
        Command::State(StateCommand::Restore(a)) => state_restore(a).map(|()| 0),
        Command::Ca(CaCommand::Import(a)) => ca_import(a).map(|()| 0),
        Command::Ca(CaCommand::Csr(a)) => ca_csr(a).map(|()| 0),
        Command::ImportSigned(a) => import_signed(a).map(|()| 0),
        Command::Adopt(a) => adopt(a).map(|()| 0),
        Command::Rotate(r) => rotate(r).map(|()| 0),
        Command::Config(ConfigCommand::PrintDefaults) => say::out(config::DEFAULT_CONFIG).map(|()| 0),
        Command::Export(a) => export(a).map(|()| 0),
        Command::Completion(a) => completion(a).map(|()| 0),
        Command::Man(a) => man(a).map(|()| 0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            say::err(&format!("kubebundle: {e}"));
            match e {
                CliError::Drift { .. } => 1,
                _ if check => 2,
                _ => e.exit_code(),
            }
        }
    }
}

/// `kubebundle completion SHELL`: clap_complete's script for the whole command line.
fn completion(a: CompletionCli) -> Result<(), CliError> {
    use clap_complete::Shell;
    let shell = match a.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
        CompletionShell::Powershell => Shell::PowerShell,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kubebundle", &mut script);
    say::out(&String::from_utf8_lossy(&script))
}

/// `kubebundle man [--out DIR]`: clap_mangen's pages.
fn man(a: ManCli) -> Result<(), CliError> {
    // The pages list the subcommands that have a page (as generate_to writes them): not `help`.
    let cmd = Cli::command().disable_help_subcommand(true);
    let Some(dir) = a.out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(|e| CliError::Other(format!("cannot render the man page: {}", crate::util::io_words(&e))))?;
        return say::out(&String::from_utf8_lossy(&page));
    };
    let failed = |e: std::io::Error| {
        CliError::Other(format!(
            "cannot write the man pages into {}: {}\n  hint: give --out a directory you can write",
            dir.display(),
            crate::util::io_words(&e)
        ))
    };
    std::fs::create_dir_all(&dir).map_err(failed)?;
    clap_mangen::generate_to(cmd, &dir).map_err(failed)?;
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .map_err(failed)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("kubebundle") && n.ends_with(".1"))
        .collect();
    pages.sort();
    say::out(&format!("wrote {} man pages into {}: {}\n", pages.len(), dir.display(), pages.join(", ")))
}

fn load_config(arg: &ConfigArg) -> Result<Config, CliError> {
    let mut config = match &arg.config {
        Some(path) => config::load_file(path)?,
        None => {
            say::err("note: no --config given: using the embedded example (3 control planes with stacked etcd, 2 workers); `kubebundle config print-defaults` prints it");
            config::load_default()
        }
    };
    if let Some(p) = &arg.profile {
        // A file given on the command line is relative to the working directory.
        config.profile = p.clone();
        config.base_dir = None;
    }
    if let Some(name) = &arg.init_node {
        if !config.set_init_node(name, "--init-node") {
            let cps: Vec<&str> = config.control_planes().map(|n| n.name.as_str()).collect();
            let what = if config.nodes.iter().any(|n| n.name == *name) { "is not a control-plane node" } else { "is not a node" };
            return Err(CliError::Usage(format!(
                "--init-node {name:?}: {what} of the Inventory in {}\n  hint: name one of its control planes: {}",
                config.source,
                cps.join(", ")
            )));
        }
    }
    Ok(config)
}

fn print_plan(args: PlanArgs) -> Result<(), CliError> {
    let config = load_config(&args.config)?;
    for n in &config.notes {
        say::err(&format!("note: {n}"));
    }
    let plan = pipeline::make_plan(&config)?;
    let text = match args.output {
        Format::Json => serde_json::to_string_pretty(&plan).map_err(|e| CliError::Other(e.to_string()))? + "\n",
        Format::Yaml => serde_saphyr::to_string(&plan).map_err(|e| CliError::Other(e.to_string()))?,
    };
    say::out(&text)
}

/// Prints the report and returns its exit code (0, 3 or 4).
fn check_expiration(args: CheckExpirationCli) -> Result<i32, CliError> {
    let clock = Clock::from_sources(args.now.as_deref(), None)?;
    let warn_within = crate::util::duration::parse_warn_within(&args.warn_within).map_err(CliError::Usage)?;
    output::sweep_around(&args.dir);
    let report = crate::lifecycle::expiry::check_expiration(&crate::lifecycle::expiry::ExpiryArgs {
        dir: args.dir,
        now: clock.now,
        warn_within,
        profile: args.profile,
    })?;
    say::out(&report.render(args.output))?;
    Ok(report.exit_code())
}

fn token(cmd: TokenCommand) -> Result<(), CliError> {
    let clock = |at: &TokenDirCli| Clock::from_sources(at.now.as_deref(), None);
    let (TokenCommand::List(TokenListCli { at, .. })
    | TokenCommand::Delete(TokenDeleteCli { at, .. })
    | TokenCommand::Create(TokenCreateCli { at, .. })) = &cmd;
    output::sweep_around(&at.dir);
    match cmd {
        TokenCommand::List(l) => {
            let now = clock(&l.at)?.now;
            let list = crate::lifecycle::tokens::list(&l.at.dir, now, l.show_token)?;
            say::out(&match l.output.json() {
                true => report::json(crate::lifecycle::tokens::JSON_KIND, &list)?,
                false => list.render_table(now),
            })?
        }
        TokenCommand::Delete(d) => {
            let dropped = crate::lifecycle::tokens::delete(&d.at.dir, &d.id, &clock(&d.at)?)?;
            say::err(&format!("deleted bootstrap token {} and its Secret manifest", d.id));
            say_dropped(&dropped);
        }
        TokenCommand::Create(c) => {
            let now = clock(&c.at)?;
            let ttl = match crate::util::duration::parse_go(&c.ttl) {
                Ok(d) if !d.negative => d.value,
                Err(e @ crate::util::duration::DurationError::TooLong(_)) => {
                    return Err(CliError::Usage(format!("--ttl {e}\n  hint: --ttl 0 makes a token that never expires")))
                }
                _ => return Err(CliError::Usage(format!("--ttl {:?} is not a duration such as 24h", c.ttl))),
            };
            ends_in_time(&now, ttl, "--ttl")?;
            let description = match c.description.as_deref().map(crate::util::text::description) {
                None => None,
                Some(Ok(crate::util::text::Description::Ok(d))) => Some(d),
                Some(Ok(crate::util::text::Description::Clipped(d, count))) => {
                    say::err(&format!(
                        "warning: --description is {count} characters long: clipped to its first {}",
                        crate::util::text::MAX_DESCRIPTION
                    ));
                    Some(d)
                }
                Some(Err((ch, at))) => {
                    return Err(CliError::Usage(format!(
                        "--description holds {} at character {at}\n  hint: a description is one line of printable text (no newlines, tabs or escape sequences)",
                        crate::util::text::name_of(ch)
                    )))
                }
            };
            let groups = if c.groups.is_empty() { crate::lifecycle::tokens::default_groups() } else { c.groups };
            let new = crate::lifecycle::tokens::NewToken { ttl, description, usages: c.usages, groups };
            let (t, join, dropped) = crate::lifecycle::tokens::create(&c.at.dir, new, &now)?;
            say::err(&format!("created bootstrap token {} (Secret manifest: manifests/bootstrap-token-{}.yaml)", t.id(), t.id()));
            say_dropped(&dropped);
            if c.print_join_command {
                say::out(&join)?;
            }
        }
    }
    Ok(())
}

/// The tokens a token command dropped because they had expired.
fn say_dropped(dropped: &[crate::bundle::state::Token]) {
    for t in dropped {
        let at = t.expires.as_deref().unwrap_or_default();
        say::err(&format!("dropped bootstrap token {} and its Secret manifest: it expired at {at}", t.id()));
    }
}

fn ca_import(args: CaImportCli) -> Result<(), CliError> {
    let config = load_config(&args.config)?;
    let clock = run_clock(args.now.as_deref())?;
    let which = ca_name(args.which);
    let done = crate::lifecycle::ca::import(
        &config,
        &crate::lifecycle::ca::ImportArgs {
            which: which.to_string(),
            cert: args.cert,
            key: args.key,
            chain: args.chain,
            out: args.out,
            force: args.force,
        },
        &clock,
    )?;
    say_lines(&done.lines)
}

fn adopt(args: AdoptCli) -> Result<(), CliError> {
    if args.config.config.is_none() {
        return Err(CliError::Usage(
            "adopt needs --config: the kubeadm config of the cluster the tree belongs to (and an Inventory of its nodes)\n  hint: kubectl -n kube-system get cm kubeadm-config -o jsonpath='{.data.ClusterConfiguration}' > cluster.yaml on the cluster, then add the InitConfiguration or Inventory naming its nodes".into(),
        ));
    }
    let config = load_config(&args.config)?;
    let clock = run_clock(args.now.as_deref())?;
    output::sweep_around(&args.out.join(&config.cluster_name));
    let done = crate::lifecycle::adopt::adopt(
        &config,
        &crate::lifecycle::adopt::AdoptArgs {
            dir: args.dir,
            out: args.out,
            profile: args.tree_profile,
            force: args.force,
            new_encryption_key: args.new_encryption_key,
            chain: args.chain,
        },
        &clock,
    )?;
    // What was taken from where: the file's digest, never its content.
    let rows: Vec<[String; 4]> = done
        .sources
        .iter()
        .map(|s| {
            let e = |t: &str| crate::util::text::escape(t).into_owned();
            [e(&s.what), e(&s.file), s.sha256.clone(), e(&s.state_file)]
        })
        .collect();
    let head = ["TAKEN", "FROM", "SHA-256", "INTO state/"].map(String::from);
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).chain([head[i].len()]).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2)];
    let line =
        |r: &[String; 4]| format!("{:w0$}  {:w1$}  {:w2$}  {}\n", r[0], r[1], r[2], r[3], w0 = widths[0], w1 = widths[1], w2 = widths[2]);
    let mut text = line(&head);
    for r in &rows {
        text += &line(r);
    }
    say::out(&text)?;
    say_lines(&done.lines)
}

fn import_signed(args: ImportSignedCli) -> Result<(), CliError> {
    let clock = run_clock(None)?;
    output::sweep_around(&args.dir);
    let done = crate::lifecycle::signed::import_signed(&args.dir, &args.signed, args.profile.as_deref(), clock.now)?;
    say_lines(&done.lines)
}

fn ca_csr(args: CaCsrCli) -> Result<(), CliError> {
    let config = load_config(&args.config)?;
    let clock = run_clock(args.now.as_deref())?;
    let which = ca_name(args.which);
    let mut flags = String::new();
    if let Some(c) = &args.config.config {
        flags += &format!(" --config {}", c.display());
    }
    if args.out != std::path::Path::new("out") {
        flags += &format!(" --out {}", args.out.display());
    }
    let done =
        crate::lifecycle::ca::csr(&config, &crate::lifecycle::ca::CsrArgs { which: which.to_string(), out: args.out, flags }, &clock)?;
    say_lines(&done.lines)
}

fn rotate(cmd: RotateCommand) -> Result<(), CliError> {
    use crate::lifecycle::rotate::{self as r, Step};
    let (material, at, provider, algorithm, new_key) = match cmd {
        RotateCommand::Status(s) => {
            let config = load_config(&s.config)?;
            output::sweep_around(&s.out.join(&config.cluster_name));
            return say_lines(&r::status(&config, &s.out)?);
        }
        RotateCommand::Encryption(e) => ("encryption", e.at, e.provider, None, false),
        RotateCommand::Sa(a) => ("sa", a, None, None, false),
        RotateCommand::Ca(c) => {
            let id = match c.ca {
                CaArg::Ca => "ca",
                CaArg::FrontProxyCa => "front-proxy-ca",
                CaArg::EtcdCa => "etcd-ca",
            };
            (id, c.at, None, c.algorithm, c.new_key)
        }
    };
    let config = load_config(&at.config)?;
    let clock = run_clock(at.now.as_deref())?;
    let mut flags = String::new();
    if let Some(c) = &at.config.config {
        flags += &format!(" --config {}", c.display());
    }
    if at.out != std::path::Path::new("out") {
        flags += &format!(" --out {}", at.out.display());
    }
    let step = match at.step {
        RotateStep::Start => Step::Start,
        RotateStep::Switch => Step::Switch,
        RotateStep::Finish => Step::Finish,
        RotateStep::Abort => Step::Abort,
    };
    let provider = provider.map(|p| match p {
        ProviderArg::Aescbc => config::EncryptionProvider::Aescbc,
        ProviderArg::Aesgcm => config::EncryptionProvider::Aesgcm,
        ProviderArg::Secretbox => config::EncryptionProvider::Secretbox,
    });
    let done = r::rotate(
        &config,
        &r::RotateArgs { material: material.to_string(), step, out: at.out, provider, algorithm, new_key, flags },
        &clock,
    )?;
    for line in &done.state_report {
        if !line.starts_with("reused") {
            say::err(&format!("state: {line}"));
        }
    }
    say_lines(&done.lines)
}

/// The run's clock: `--now`, else SOURCE_DATE_EPOCH, else the system clock.
fn run_clock(now: Option<&str>) -> Result<Clock, CliError> {
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    Ok(Clock::from_sources(now, epoch.as_deref())?)
}

/// A report's lines on standard output.
fn say_lines(lines: &[String]) -> Result<(), CliError> {
    say::out(&lines.iter().map(|l| format!("{l}\n")).collect::<String>())
}

fn ca_name(which: CaName) -> &'static str {
    match which {
        CaName::Ca => "ca",
        CaName::FrontProxyCa => "front-proxy-ca",
        CaName::EtcdCa => "etcd-ca",
    }
}

fn state_restore(args: StateRestoreCli) -> Result<(), CliError> {
    let clock = Clock::from_sources(args.now.as_deref(), None)?;
    output::sweep_around(&args.dir);
    let report = crate::bundle::state::restore::restore(&crate::bundle::state::restore::RestoreArgs {
        dir: args.dir.clone(),
        from: args.from,
        now: clock.now,
    })?;
    let mut text: String = report.lines.iter().map(|l| format!("{l}\n")).collect();
    if report.restored > 0 {
        text.push_str("next: run `kubebundle generate` with the bundle's config: the restored state gives the same files (`generate --check` shows it)\n");
    }
    say::out(&text)
}

fn renew(args: RenewCli) -> Result<(), CliError> {
    const CAS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];
    // Serials are random: start gathering the generator's entropy (~30 ms) while the nodes load.
    std::thread::spawn(|| aws_lc_rs::rand::fill(&mut [0u8; 1]));
    let clock = Clock::from_sources(args.now.as_deref(), None)?;
    let cas = args.targets.iter().filter(|t| CAS.contains(&t.as_str())).count();
    let validity = match (&args.validity, cas) {
        (Some(v), _) => match crate::util::duration::parse_go(v) {
            Ok(d) if !d.negative && !d.value.is_zero() => d.value,
            Err(e @ crate::util::duration::DurationError::TooLong(_)) => {
                return Err(CliError::Usage(format!(
                    "--validity {e}\n  hint: certificates last 8760h (a year) by default, CAs 87600h (ten years)"
                )))
            }
            _ => return Err(CliError::Usage(format!("--validity {v:?} is not a positive duration such as 8760h"))),
        },
        (None, 0) => std::time::Duration::from_secs(8760 * 3600),
        (None, n) if n == args.targets.len() => std::time::Duration::from_secs(87600 * 3600),
        (None, _) => {
            return Err(CliError::Usage(
                "CAs and certificates have different default validities: renew them separately, or give --validity".into(),
            ))
        }
    };
    output::sweep_around(&args.dir);
    let dir = args.dir.clone();
    let report = crate::lifecycle::renew::renew(&crate::lifecycle::renew::RenewArgs {
        dir: args.dir,
        targets: args.targets,
        new_key: args.new_key,
        validity,
        dry_run: args.dry_run,
        now: clock.now,
        profile: args.profile,
        csr_dir: args.csr_dir,
    })?;
    say::out(&report.render())?;
    if !report.requests.is_empty() && !report.dry_run {
        // External-CA mode, like generate: the run wrote CSRs, the renewal waits for the signer.
        let renewed = if report.renewed.is_empty() { String::new() } else { format!(", and {} other(s) renewed", report.renewed.len()) };
        return Err(CliError::Awaiting(format!(
            "waiting for {} signed certificate(s) (external CA): their CSRs were written, listed above{renewed}; the certificates they renew are unchanged\n  hint: have each CSR signed by its CA keeping its extensions, then `kubebundle import-signed --dir {} SIGNED...` (a bundle: then `kubebundle generate` re-packs its nodes)",
            report.requests.len(),
            dir.display()
        )));
    }
    Ok(())
}

fn export(args: ExportCli) -> Result<(), CliError> {
    use crate::export::Format;
    let format = match args.format {
        ExportFormat::CloudInit => Format::CloudInit,
        ExportFormat::Ignition => Format::Ignition,
    };
    output::sweep_around(&args.dir);
    let report = crate::lifecycle::export::export(&crate::lifecycle::export::ExportArgs {
        format,
        dir: args.dir,
        nodes: args.nodes,
        out: args.out,
        opts: crate::export::Options { runcmd: args.runcmd },
        gzip: args.gzip,
    })?;
    let mut text = String::new();
    for (path, size) in &report.written {
        text.push_str(&format!("wrote {} ({size} bytes, 0600)\n", crate::util::text::escape(&path.display().to_string())));
    }
    say::out(&text)?;
    for w in &report.warnings {
        say::err(&format!("warning: {w}"));
    }
    Ok(())
}

fn verify(args: VerifyCli) -> Result<(), CliError> {
    let clock = Clock::from_sources(args.now.as_deref(), None)?;
    let warn = crate::util::duration::parse_warn_within(&args.warn_within).map_err(CliError::Usage)?;
    output::sweep_around(&args.path);
    let shown = args.path.display().to_string();
    let report = crate::audit::verify::verify(&crate::audit::verify::VerifyArgs {
        path: args.path,
        now: clock.now,
        warn_within: warn,
        foreign: args.foreign,
    })?;
    let text = match args.output.json() {
        true => report::json(crate::audit::verify::JSON_KIND, &report.to_json(&shown, clock.now))?,
        false => report.render_table(),
    };
    say::out(&text)?;
    if report.has_errors() {
        return Err(CliError::Other(format!("verify found {} error(s)", report.count(crate::audit::verify::Severity::Error))));
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<(), CliError> {
    // The first use of aws-lc's random generator gathers CPU-jitter entropy (~30 ms here): start
    // it now, while the config and the state load, rather than when the first new key is made.
    std::thread::spawn(|| aws_lc_rs::rand::fill(&mut [0u8; 1]));
    let clock = run_clock(args.now.as_deref())?;
    let mut config = load_config(&args.config)?;
    if let Some(path) = &args.seed_file {
        if !args.insecure_deterministic {
            return Err(CliError::Usage(format!(
                "--seed-file {} makes every key and token of the cluster derivable from one file, which is only for test clusters\n  hint: add --insecure-deterministic to acknowledge it, or drop --seed-file for real clusters",
                path.display()
            )));
        }
        if args.now.is_none() && std::env::var("SOURCE_DATE_EPOCH").is_err() {
            return Err(CliError::Usage(
                "--seed-file needs a fixed clock so two machines make the same bundle\n  hint: add --now 2026-01-01T00:00:00Z or set SOURCE_DATE_EPOCH".into(),
            ));
        }
        let seed = crate::pki::derive::Seed::from_file(path).map_err(|e| CliError::Usage(format!("--seed-file: {e}")))?;
        config.seed = Some(std::sync::Arc::new(seed));
        say::err(&format!("WARNING: --insecure-deterministic: every key and token this run makes is derived from {}; keep it as secret as the CA keys, and never use it for a real cluster", path.display()));
    } else if args.insecure_deterministic {
        return Err(CliError::Usage("--insecure-deterministic only goes with --seed-file FILE".into()));
    }
    for n in &config.notes {
        say::err(&format!("note: {n}"));
    }
    ends_in_time(&clock, config.ca_validity, "caCertificateValidityPeriod")?;
    ends_in_time(&clock, config.cert_validity, "certificateValidityPeriod")?;
    for t in &config.tokens {
        ends_in_time(&clock, t.ttl, "a bootstrap token's ttl")?;
    }
    let cluster_dir = args.out.join(&config.cluster_name);
    if args.check {
        let changes = pipeline::check(&config, &args.out, &clock, args.unpacked)?;
        say::out(&changes.iter().map(|c| format!("{c}\n")).collect::<String>())?;
        if changes.is_empty() {
            return say::out(&format!("{}: up to date\n", cluster_dir.display()));
        }
        return Err(CliError::Drift { dir: cluster_dir.display().to_string(), count: changes.len() });
    }
    let (state, bundle, notes, steps) = pipeline::build(&config, &args.out, &clock, args.force, args.unpacked)?;

    let mut err = std::io::stderr().lock();
    for line in &state.report {
        let _ = writeln!(err, "state: {line}");
    }
    for w in &bundle.warnings {
        let _ = writeln!(err, "warning: {w}");
    }
    // The JSON report (stdout alone; everything above and below also goes to stderr).
    let json_report = |notes: &[String], steps: &[String]| -> Result<String, CliError> {
        let messages = state
            .report
            .iter()
            .map(|l| format!("state: {l}"))
            .chain(bundle.warnings.iter().map(|w| format!("warning: {w}")))
            .chain(notes.iter().cloned())
            .collect();
        let c = &bundle.changes;
        report::json(
            report::GENERATE_KIND,
            &report::GenerateReport {
                bundle: cluster_dir.display().to_string(),
                cluster_name: config.cluster_name.clone(),
                now: crate::clock::rfc3339(clock.now),
                nodes: bundle.node_names.clone(),
                discovery_hash: bundle.discovery_hash.clone(),
                written: c.written.clone(),
                kept: c.kept.clone(),
                removed: c.removed.clone(),
                removed_nodes: c
                    .moved_out
                    .iter()
                    .map(|(name, dest)| report::RemovedNode { name: name.clone(), archive: dest.display().to_string() })
                    .collect(),
                certificates: report::Certificates { issued: bundle.issued, kept: bundle.reused },
                awaiting_signed_certificates: bundle.awaiting,
                messages,
                steps: steps.to_vec(),
                join_commands: args.print_join_command.then(|| report::JoinCommands::from_join_text(&bundle.join_text)),
            },
        )
    };
    if bundle.awaiting > 0 {
        // External-CA mode: the keys are in the state, the CSRs wait for the operator's signer.
        let csr_dir = cluster_dir.join(crate::bundle::state::CSR_DIR);
        drop(err);
        if args.output.json() {
            say::out(&json_report(&notes, &steps)?)?;
        }
        return Err(CliError::Awaiting(format!(
            "waiting for {} signed certificates (external CA): wrote {} CSR file(s) to {} (keys in {}); no node tarball was written\n  hint: have each CSR signed by your CA (keep its extensions: `openssl ca` with copy_extensions = copy, Vault pki/sign/<role>), put each certificate beside its CSR as <name>.crt (or keep Vault's JSON), then run `kubebundle import-signed --dir {} SIGNED...` and generate again",
            bundle.awaiting,
            bundle.csrs.iter().count(),
            csr_dir.display(),
            cluster_dir.join("state").join(crate::bundle::state::LEAVES_FILE).display(),
            cluster_dir.display()
        )));
    }
    let _ = writeln!(err, "leaf certificates: {} kept from the previous bundle, {} issued", bundle.reused, bundle.issued);
    for line in &notes {
        let _ = writeln!(err, "{line}");
    }
    let files = bundle.node_files;
    let _ = writeln!(
        err,
        "wrote {} ({} nodes, {files} node files, {} {}, discovery hash {}) at {}",
        cluster_dir.display(),
        bundle.node_names.len(),
        config.algorithm.name(),
        config.kubernetes_version,
        bundle.discovery_hash,
        clock.now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
    );
    const LISTED: usize = 20;
    for name in bundle.node_names.iter().take(LISTED) {
        let _ = writeln!(err, "  {}", cluster_dir.join("nodes").join(format!("{name}.tar.gz")).display());
    }
    if bundle.node_names.len() > LISTED {
        let _ = writeln!(err, "  ... and {} more in {}", bundle.node_names.len() - LISTED, cluster_dir.join("nodes").display());
    }
    // What to do on the running cluster (etcd members to add or remove, a new init node).
    for line in &steps {
        let _ = writeln!(err, "{line}");
    }
    drop(err);
    if args.output.json() {
        return say::out(&json_report(&notes, &steps)?);
    }
    // The join commands hold a token and are printed by design (they are also in join.txt).
    say::out(bundle.join_text.as_str())
}

/// Refuses a period that, from the run's clock, ends after the year 9999: no certificate or
/// token can say so (and the arithmetic would overflow).
fn ends_in_time(clock: &Clock, period: std::time::Duration, what: &str) -> Result<(), CliError> {
    let end = time::Duration::try_from(period).ok().and_then(|d| clock.now.checked_add(d)).filter(|t| t.year() <= 9999);
    match end {
        Some(_) => Ok(()),
        None => Err(CliError::Usage(format!(
            "{what} ({}) from {} ends after the year 9999, which no certificate or token can hold\n  hint: shorten it, or give an earlier --now",
            crate::util::duration::format_go(period),
            crate::clock::rfc3339(clock.now)
        ))),
    }
}
