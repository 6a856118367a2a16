//! End-to-end: real Envoy (V8) with the wasm filter, the real runner with its namespace
//! sandbox, the official rmcp client. One stack is shared by all tests in this binary.

mod cases;

use std::sync::OnceLock;

use portcullis_e2e::Stack;

pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    // The stack lives until the test process exits; its `up` stops when our end of its stdin
    // closes, so nothing outlives the run.
    STACK.get_or_init(|| {
        let s = Stack::start();
        eprintln!("stack ready in {:?} at {}", s.ready_after, s.url());
        s
    })
}
