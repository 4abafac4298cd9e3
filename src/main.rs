fn main() {
    std::process::exit(kubebundle::cli::main());
}
