//! `pyralog-node`: the Pyralog daemon.

fn main() {
    pyralog_node::cli::main_from(std::env::args_os());
}
