fn main() {
    std::process::exit(mito::cli::main());
}
