//! Network namespaces for the reachability tests: made with iproute2 (`ip netns`, veth pairs)
//! by the test itself, and deleted when dropped, also when the test fails. A missing `ip`
//! fails loudly.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Runs `ip ARGS`; panics with its stderr when it fails (or is missing).
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("`ip` (iproute2) is required for the network tests and could not run: {e}"));
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A named network namespace, deleted on drop (which also deletes its veth ends).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip ARGS` inside this namespace.
    pub fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A command run inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread that has entered this namespace: the sockets it opens are this
    /// namespace's.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.name)).expect("netns file");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in the namespace")
    }

    /// Whether a TCP connection to `addr` from this namespace succeeds (3 s limit).
    pub fn connects(&self, addr: SocketAddr) -> bool {
        self.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A veth pair joining `a` (address `a_ip`) and `b` (`b_ip`) on a /24, each end up.
pub fn link(a: &Netns, a_ip: Ipv4Addr, b: &Netns, b_ip: Ipv4Addr) {
    // Each end is named after its namespace and the other's last letter ("...ag" in a, "...ga" in b).
    let last = |ns: &Netns| ns.name.chars().last().unwrap_or('x');
    let (ea, eb) = (format!("{}{}", a.name, last(b)), format!("{}{}", b.name, last(a)));
    // Created in `a`, the other end moved to `b`: no name is ever taken in the host namespace.
    a.exec_ip(&["link", "add", &ea, "type", "veth", "peer", "name", &eb]);
    a.exec_ip(&["link", "set", &eb, "netns", &b.name]);
    for (ns, dev, addr) in [(a, &ea, a_ip), (b, &eb, b_ip)] {
        ns.exec_ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
        ns.exec_ip(&["link", "set", dev, "up"]);
    }
}
