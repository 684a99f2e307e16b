//! Where one destination's requests go next: its nodes in the order they are tried, and the
//! address a 7.0 proxy group's redirect named, kept by the rules of zabbix_sender 7.0
//! (`comms_check_redirect` and `zbx_comms_exchange_with_redirect` in zbxcommshigh/comms.c).
//!
//! A server or proxy that does not hold a host answers
//! `{"redirect":{"revision":1,"address":"127.0.0.1:10071"},"response":"failed"}`: the address
//! goes to the head of the list (a redirect older than the one held is ignored) and the request
//! is sent there, once: a second redirect in a row is an error. `{"redirect":{"reset":true}}`
//! sends a redirected address to the end of the list, and the request goes on to the
//! configured nodes. A connection failure, or a refusal that only says "not here", moves the
//! node to the end and tries the next. A redirect or a refusal says nothing was processed, so
//! sending the request again cannot duplicate a value.

use std::collections::HashMap;
use std::fmt;

use super::destination::{self, Destination, Endpoint};
use super::transport::{self, ConnectOptions, TransportError};
use crate::deadline::{Backoff, Deadline};
use crate::outcome::{Classify, Failure};
use crate::text::shown;

/// One destination's nodes in the order the next request tries them, and per host the address
/// a redirect named. Kept between requests, so a coprocess remembers where its host lives; kept
/// per host, because a proxy group places each host on its own proxy.
#[derive(Debug, Clone)]
pub struct Route {
    destination: Destination,
    /// The configured nodes; a node that failed or said "not here" goes to the end.
    nodes: Vec<Endpoint>,
    redirects: HashMap<String, Held>,
}

/// Where a redirect sent a host's requests.
#[derive(Debug, Clone)]
struct Held {
    endpoint: Endpoint,
    revision: u64,
    /// Tried before the configured nodes; after a reset or a failure, only after them.
    first: bool,
}

impl Route {
    /// The destination's nodes, in the order written.
    pub fn new(destination: &Destination) -> Self {
        Self {
            destination: destination.clone(),
            nodes: destination.nodes.clone(),
            redirects: HashMap::new(),
        }
    }

    /// The destination as configured.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Where the next request for `host` goes first, when a redirect named it.
    pub fn redirected(&self, host: &str) -> Option<&Endpoint> {
        self.redirects
            .get(host)
            .filter(|h| h.first)
            .map(|h| &h.endpoint)
    }

    /// The nodes in the order the next request for `host` tries them.
    pub fn order(&self, host: &str) -> Vec<Endpoint> {
        self.list(host).0.into_iter().map(|n| n.endpoint).collect()
    }

    /// The working list for one request for `host`.
    fn list(&self, host: &str) -> List {
        let configured = self.nodes.iter().map(|e| Node {
            endpoint: e.clone(),
            revision: None,
        });
        let held = self.redirects.get(host).map(|h| {
            (
                h.first,
                Node {
                    endpoint: h.endpoint.clone(),
                    revision: Some(h.revision),
                },
            )
        });
        let nodes = match held {
            Some((true, n)) => std::iter::once(n).chain(configured).collect(),
            Some((false, n)) => configured.chain(std::iter::once(n)).collect(),
            None => configured.collect(),
        };
        List(nodes)
    }

    /// Keep what one request for `host` learnt.
    fn keep(&mut self, host: &str, list: List) {
        let mut held = None;
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (i, n) in list.0.into_iter().enumerate() {
            match n.revision {
                Some(revision) => {
                    held = Some(Held {
                        endpoint: n.endpoint,
                        revision,
                        first: i == 0,
                    })
                }
                None => nodes.push(n.endpoint),
            }
        }
        self.nodes = nodes;
        match held {
            Some(h) => {
                self.redirects.insert(host.to_string(), h);
            }
            None => {
                self.redirects.remove(host);
            }
        }
    }
}

/// The nodes one request tries, in order, as zabbix_sender keeps its address list: the
/// configured nodes and at most one address a redirect named.
#[derive(Debug, Clone, PartialEq, Eq)]
struct List(Vec<Node>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    endpoint: Endpoint,
    /// The redirect's revision for the address a redirect named; `None` for a configured node.
    revision: Option<u64>,
}

impl List {
    fn head(&self) -> &Endpoint {
        &self.0[0].endpoint
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The head goes to the end (it failed, or said the host is not there).
    fn failover(&mut self) {
        self.0.rotate_left(1);
    }

    /// Take a redirect to `to` with `revision`: the address goes to the head, replacing the one
    /// held, unless the one held is newer; then that redirect stands, and if it is the head
    /// (which has just sent us elsewhere) it goes to the end.
    fn follow(&mut self, revision: u64, to: Endpoint) {
        let held = self.0.iter().position(|n| n.revision.is_some());
        if let Some(i) = held {
            if self.0[i].revision.is_some_and(|r| revision < r) {
                if i == 0 {
                    self.failover();
                }
                return;
            }
            self.0.remove(i);
        }
        self.0.insert(
            0,
            Node {
                endpoint: to,
                revision: Some(revision),
            },
        );
    }

    /// A reset: a redirected head goes to the end (`true`); a configured head has nothing to
    /// reset (`false`).
    fn reset(&mut self) -> bool {
        let redirected = self.0[0].revision.is_some();
        if redirected {
            self.failover();
        }
        redirected
    }
}

/// What a reply says about where the request belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// An answer to the request itself (success, or a refusal to pass on as it is).
    Answer,
    /// The host lives at `to`.
    Redirect { revision: u64, to: Endpoint },
    /// Forget the redirected address.
    Reset,
    /// The host is not here, and the reply does not say where it is.
    NotHere(String),
}

/// The endings of Zabbix 7.0's refusals that mean "this node does not hold the host" (the
/// `host "<name>"` before them varies): active.c's `is monitored by a proxy`, and
/// dbconfig.c's two lines for a host of a proxy group, which 7.0 sends as a redirect block
/// instead but another release may send as text. Zabbix 6.0 has none: there a value for a host
/// monitored elsewhere is counted as failed, and an active-checks request gets `host [x] not
/// found`.
const NOT_HERE: [&str; 3] = [
    "\" is monitored by a proxy",
    "\" is monitored by another proxy",
    "\" redirected address is being reset",
];

fn verdict(payload: &[u8]) -> Verdict {
    let Ok(reply) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Verdict::Answer;
    };
    if reply.get("response").and_then(|r| r.as_str()) != Some("failed") {
        return Verdict::Answer;
    }
    if let Some(redirect) = reply.get("redirect") {
        // A block zabbix_sender cannot parse is no redirect: the reply is refused as it is.
        return parse_redirect(redirect).unwrap_or(Verdict::Answer);
    }
    match reply.get("info").and_then(|i| i.as_str()) {
        Some(info) if info.starts_with("host \"") && NOT_HERE.iter().any(|e| info.ends_with(e)) => {
            Verdict::NotHere(info.to_string())
        }
        _ => Verdict::Answer,
    }
}

/// The longest redirect address taken: a DNS name and a port.
const MAX_ADDRESS: usize = 261;

/// `{"reset":true}`, or `{"revision":N,"address":"host[:port]"}` (`zbx_parse_redirect_response`).
fn parse_redirect(block: &serde_json::Value) -> Option<Verdict> {
    let text = |field: &str| match block.get(field)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    if text("reset").as_deref() == Some("true") {
        return Some(Verdict::Reset);
    }
    let revision = text("revision")?.parse::<u64>().ok()?;
    let address = text("address")?;
    // A peer's words end up in messages: a name no DNS or proxy config could hold is no address.
    if address.len() > MAX_ADDRESS || address.chars().any(char::is_control) {
        return None;
    }
    let to = destination::parse_endpoint(&address, destination::DEFAULT_PORT).ok()?;
    Some(Verdict::Redirect { revision, to })
}

/// Why no node of a destination took a request, beyond the transport's own failures.
#[derive(Debug)]
pub enum RedirectError {
    /// A node redirected the request right after another node had: one redirect is followed
    /// per request.
    Sequential {
        first: String,
        endpoint: String,
        to: String,
    },
    /// Every node that answered said the host is not there, without saying where it is.
    NotHere { endpoint: String, info: String },
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectError::Sequential {
                first,
                endpoint,
                to,
            } => write!(
                f,
                "Zabbix at {endpoint} redirected the request to {} right after {first} had \
                 redirected it (one redirect is followed per request): the host's proxy is \
                 down or its proxy group is moving the host",
                shown(to)
            ),
            RedirectError::NotHere { endpoint, info } => write!(
                f,
                "Zabbix at {endpoint} does not hold the host: {}: send to the proxy (or proxy \
                 group) that monitors it",
                shown(info)
            ),
        }
    }
}

impl std::error::Error for RedirectError {}

impl Classify for RedirectError {
    fn failure(&self) -> Failure {
        match self {
            RedirectError::Sequential { .. } | RedirectError::NotHere { .. } => {
                Failure::ZabbixRefused
            }
        }
    }
}

/// Why [`exchange`] failed: the transport, or where the nodes sent the request. Callers turn
/// it into their own error at once (`SendError`), which states the class.
#[derive(Debug)]
pub(crate) enum RouteError {
    Transport(TransportError),
    Redirect(RedirectError),
}

impl From<TransportError> for RouteError {
    fn from(e: TransportError) -> Self {
        RouteError::Transport(e)
    }
}

/// A reply, and the node that sent it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub payload: Vec<u8>,
    pub endpoint: Endpoint,
}

/// Send `message` (already framed) along `route` and return the first reply that answers it:
/// connection failures and "not here" refusals go on to the next node, one redirect is
/// followed, and whole rounds are retried with backoff while a connection failure leaves hope
/// and the deadline allows. A request that may have reached a server (a timeout, a garbled
/// reply) is never sent again.
pub(crate) fn exchange<M: transport::Message + ?Sized>(
    route: &mut Route,
    host: &str,
    message: &M,
    deadline: &Deadline,
    opts: &ConnectOptions,
) -> Result<Answer, RouteError> {
    let mut list = route.list(host);
    let result = exchange_along(&mut list, message, deadline, opts);
    route.keep(host, list);
    result
}

fn exchange_along<M: transport::Message + ?Sized>(
    route: &mut List,
    message: &M,
    deadline: &Deadline,
    opts: &ConnectOptions,
) -> Result<Answer, RouteError> {
    let mut backoff = Backoff::new(opts.backoff_base, opts.backoff_max);
    let mut redirected_by: Option<Endpoint> = None;
    let mut rounds = 0u32;
    loop {
        let mut unreachable = None;
        let mut refusal = None;
        // Nodes left to try in this round; a redirect or a reset starts a fresh pass.
        let mut left = route.len();
        while left > 0 {
            let endpoint = route.head().clone();
            let payload = match transport::exchange(&endpoint, message, deadline, opts) {
                Ok(payload) => payload,
                Err(e) if e.is_retryable() => {
                    unreachable = Some(e);
                    route.failover();
                    left -= 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match verdict(&payload) {
                Verdict::Answer => return Ok(Answer { payload, endpoint }),
                Verdict::Redirect { revision, to } => {
                    if let Some(first) = &redirected_by {
                        route.failover();
                        return Err(RouteError::Redirect(RedirectError::Sequential {
                            first: first.to_string(),
                            endpoint: endpoint.to_string(),
                            to: to.to_string(),
                        }));
                    }
                    redirected_by = Some(endpoint);
                    route.follow(revision, to);
                    left = route.len();
                }
                Verdict::Reset if route.reset() => left = route.len(),
                Verdict::Reset => {
                    refusal = Some(RedirectError::NotHere {
                        endpoint: endpoint.to_string(),
                        info: "the redirect was reset, but none was followed: the host's \
                               proxy has been offline and the host is moving"
                            .into(),
                    });
                    route.failover();
                    left -= 1;
                }
                Verdict::NotHere(info) => {
                    refusal = Some(RedirectError::NotHere {
                        endpoint: endpoint.to_string(),
                        info,
                    });
                    route.failover();
                    left -= 1;
                }
            }
        }
        rounds += 1;
        // Only a connection failure can end differently next round.
        let hope = unreachable.is_some();
        let last = match (refusal, unreachable) {
            (Some(r), _) => RouteError::Redirect(r),
            (None, Some(u)) => RouteError::Transport(u),
            (None, None) => {
                RouteError::Transport(TransportError::Request("empty destination".into()))
            }
        };
        if !hope || opts.max_rounds.is_some_and(|max| rounds >= max) {
            return Err(last);
        }
        let delay = backoff.next_delay();
        if delay >= deadline.remaining() {
            return Err(last);
        }
        std::thread::sleep(delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn list(ports: &[u16]) -> List {
        List(
            ports
                .iter()
                .map(|&p| Node {
                    endpoint: ep(p),
                    revision: None,
                })
                .collect(),
        )
    }

    fn order(l: &List) -> Vec<u16> {
        l.0.iter().map(|n| n.endpoint.port).collect()
    }

    #[test]
    fn the_redirect_goes_to_the_head_and_a_newer_one_replaces_it() {
        let mut l = list(&[1, 2]);
        l.follow(1, ep(71));
        assert_eq!(order(&l), [71, 1, 2]);
        // The same revision again (another node's view) is taken, not added twice.
        l.follow(1, ep(71));
        assert_eq!(order(&l), [71, 1, 2]);
        l.failover();
        l.follow(2, ep(72));
        assert_eq!(order(&l), [72, 1, 2]);
    }

    #[test]
    fn an_older_redirect_is_ignored_and_sends_a_redirected_head_last() {
        let mut l = list(&[1, 2]);
        l.follow(5, ep(75));
        l.follow(3, ep(73));
        assert_eq!(
            order(&l),
            [1, 2, 75],
            "the head that sent us back goes last"
        );
        l.follow(4, ep(74));
        assert_eq!(order(&l), [1, 2, 75], "still older than 5: nothing changes");
    }

    #[test]
    fn a_reset_moves_only_a_redirected_head() {
        let mut l = list(&[1, 2]);
        assert!(!l.reset());
        assert_eq!(order(&l), [1, 2]);
        l.follow(1, ep(71));
        assert!(l.reset());
        assert_eq!(order(&l), [1, 2, 71]);
        assert!(!l.reset());
        // A later redirect replaces the one that was reset, wherever it is.
        l.follow(2, ep(72));
        assert_eq!(order(&l), [72, 1, 2]);
    }

    #[test]
    fn a_route_keeps_each_hosts_redirect_and_shares_the_node_order() {
        let d = Destination {
            nodes: vec![ep(1), ep(2)],
        };
        let mut r = Route::new(&d);
        let mut l = r.list("h1");
        l.follow(1, ep(71));
        r.keep("h1", l);
        assert_eq!(r.redirected("h1"), Some(&ep(71)));
        assert_eq!(r.order("h2"), [ep(1), ep(2)], "h2 lives elsewhere");
        let mut l = r.list("h2");
        l.failover(); // node 1 failed for h2: every host tries node 2 first now
        r.keep("h2", l);
        assert_eq!(r.order("h1"), [ep(71), ep(2), ep(1)]);
        // A reset keeps the address, but only as a last resort.
        let mut l = r.list("h1");
        assert!(l.reset());
        r.keep("h1", l);
        assert_eq!(r.redirected("h1"), None);
        assert_eq!(r.order("h1"), [ep(2), ep(1), ep(71)]);
        assert_eq!(r.destination(), &d);
    }

    #[test]
    fn replies_are_read_as_zabbix_sender_reads_them() {
        let v = |s: &str| verdict(s.as_bytes());
        assert_eq!(
            v(r#"{"redirect":{"revision":1,"address":"127.0.0.1:10071"},"response":"failed"}"#),
            Verdict::Redirect {
                revision: 1,
                to: ep(10071)
            }
        );
        assert_eq!(
            v(r#"{"response":"failed","redirect":{"revision":"7","address":"proxy-b"}}"#),
            Verdict::Redirect {
                revision: 7,
                to: Endpoint {
                    host: "proxy-b".into(),
                    port: 10051
                }
            }
        );
        assert_eq!(
            v(r#"{"redirect":{"reset":true},"response":"failed"}"#),
            Verdict::Reset
        );
        assert_eq!(
            v(r#"{"response":"failed","info":"host \"web 1\" is monitored by a proxy"}"#),
            Verdict::NotHere(r#"host "web 1" is monitored by a proxy"#.into())
        );
        assert_eq!(
            v(r#"{"response":"failed","info":"host \"w\" is monitored by another proxy"}"#),
            Verdict::NotHere(r#"host "w" is monitored by another proxy"#.into())
        );
        // Everything else is an answer for the caller to judge.
        for answer in [
            r#"{"response":"success","info":"processed: 1; failed: 0; total: 1"}"#,
            r#"{"response":"success","redirect":{"revision":1,"address":"x:1"}}"#,
            r#"{"response":"failed","info":"host [w] not found"}"#,
            r#"{"response":"failed","info":"Zabbix server shutdown in progress"}"#,
            r#"{"response":"failed","redirect":{"revision":-1,"address":"x:1"}}"#,
            r#"{"response":"failed","redirect":{"revision":1,"address":"x:0"}}"#,
            r#"{"response":"failed","redirect":{"address":"x:1"}}"#,
            r#"{"response":"failed","redirect":{"reset":false}}"#,
            r#"{"response":"failed","redirect":{"revision":1,"address":"a\u001b:1"}}"#,
            &format!(
                r#"{{"response":"failed","redirect":{{"revision":1,"address":"{}:1"}}}}"#,
                "a".repeat(300)
            ),
            "not json",
        ] {
            assert_eq!(v(answer), Verdict::Answer, "{answer}");
        }
    }
}
