//! The lab's frontend draws the app dashboard, in a real browser: a headless Chromium
//! (scripts/install-browser.sh) logs in to the frontend with the lab's user, opens the
//! "Concierge app" template dashboard of a host that a real agent's courier has fed, and every
//! graph on it must be a graph (not the one-line error image a frontend without its locale
//! draws) with data drawn: more pixels of its items' colours than the same graph over a period
//! without data. The test saves a screenshot of the dashboard to
//! target/frontend/app-dashboard-VERSION.png (`make readme-screenshot` copies the 7.0 one to
//! docs/). Runs against each lab version.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use concierge_testkit::browser::{self, Browser};
use concierge_testkit::docker::target_dir;
use concierge_testkit::*;
use serde_json::{json, Value};

const APP_TEMPLATE: &str = "Concierge app";
const TIME_KEY: &str = "concierge.courier.time";
/// The graph whose item is calculated once a minute: it may not have two values yet.
const SLOW_GRAPH: &str = "Concierge: Heartbeats per minute";
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1250;

/// The browser, or None (after saying why) when none is installed and the lab may be skipped.
fn browser_or_skip() -> Option<std::path::PathBuf> {
    if let Some(p) = browser::chromium() {
        return Some(p);
    }
    let why = "no headless Chromium: run scripts/install-browser.sh (make test does)";
    assert!(
        std::env::var("CONCIERGE_REQUIRE_LAB").as_deref() != Ok("1"),
        "{why}"
    );
    println!("SKIPPED {}: {why}", current_test());
    None
}

/// Wait until `expression` is true in the page.
fn wait_page(b: &mut Browser, what: &str, expression: &str) {
    wait_for(what, Duration::from_secs(60), || {
        let v = b.eval(expression)?;
        if v == json!(true) {
            return Ok(Some(()));
        }
        let at = b.eval(
            "location.href + ' ' + document.title + ' images: ' + \
             [...document.images].map(i => i.src.slice(0, 80) + ' ' + i.naturalWidth).join(', ')",
        )?;
        anyhow::bail!("{expression} is {v} at {at}")
    });
}

/// Per chart image on the page: its graph id, size, and the pixels near its items' colours
/// (from the URL, else `colors[graphid]`) in it and in the same chart over a month-old hour
/// (no data there): the legend's squares are in both, the lines only where data was drawn.
const MEASURE: &str = r#"(async (colors) => {
  const count = async (src) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const u = new URL(src, location.href);
    // chart2.php draws a graph by id; chart3.php (6.0's widgets) carries its items' colours.
    const inUrl = [...u.searchParams].filter(([k]) => /^items\[\d+\]\[color\]$/.test(k))
      .map(([, v]) => v);
    const hex = inUrl.length ? inUrl : (colors[u.searchParams.get('graphid')] || []);
    // Near the colour, not exactly: lines are antialiased, and the canvas may convert colours.
    const want = hex.map(h => parseInt(h, 16)).map(c => [c >> 16, (c >> 8) & 255, c & 255]);
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (want.some(([r, g, b]) =>
          Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) <= 90)) n++;
    }
    return {w: c.width, h: c.height, n};
  };
  const out = [];
  for (const img of document.querySelectorAll('img')) {
    if (!/chart\d?\.php/.test(img.src)) continue;
    const u = new URL(img.src, location.href);
    const live = await count(u.href);
    u.searchParams.set('from', 'now-30d');
    u.searchParams.set('to', 'now-30d+1h');
    const empty = await count(u.href);
    out.push({graphid: u.searchParams.get('graphid'), name: u.searchParams.get('name'),
              src: img.src, w: live.w, h: live.h,
              live: live.n, empty: empty.n});
  }
  return out;
})"#;

lab_test!(
    fn the_app_dashboard_draws_the_couriers_graphs_in_a_browser(lab: &Lab) {
        let Some(chromium) = browser_or_skip() else {
            return;
        };
        let t0 = Instant::now();
        lab.import_template_file("concierge_heartbeat.yaml")
            .expect("import heartbeat template");
        lab.import_template_file("concierge_app.yaml")
            .expect("import app template");
        let template = lab.template_id(APP_TEMPLATE).expect("app template");
        let doc = std::fs::read(repo_root().join("tests/fixtures/metrics.json")).expect("fixture");
        let server = MetricsServer::serve(doc);
        let name = unique_host("frontend");
        let host = lab.create_host_with(
            &name,
            json!({
                "templates": [{"templateid": template}],
                "macros": [
                    {"macro": "{$METRICS_URL}", "value": server.url()},
                    {"macro": "{$COURIER_INTERVAL}", "value": "5s"},
                    {"macro": "{$DISCOVERY_INTERVAL}", "value": "10s"},
                ]
            }),
        );
        // The agent asks for its active checks at start: start it once the server knows the host.
        lab.wait_until_accepted(&name, "concierge.load", "0.5");
        let _agent = Agent::start(lab, &lab.facts().agentd(), &name, 10);
        let time_item = wait_for("the courier's items", Duration::from_secs(60), || {
            Ok(host.item_id(TIME_KEY).ok())
        });
        wait_for(
            "four successful courier runs",
            Duration::from_secs(180),
            || {
                let n = lab.history(std::slice::from_ref(&time_item), FLOAT)?.len();
                if n >= 4 {
                    return Ok(Some(()));
                }
                anyhow::bail!("{n} delivery times so far")
            },
        );
        let fed = t0.elapsed();

        // The host's graphs (from the template and the graph prototypes) and their colours.
        let graphs = lab
            .call(
                "graph.get",
                json!({"output": ["graphid", "name"], "hostids": [host.hostid],
                       "selectGraphItems": ["color"]}),
            )
            .expect("graph.get");
        let mut colors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for g in graphs.as_array().into_iter().flatten() {
            let id = g["graphid"].as_str().unwrap_or_default().to_string();
            let c = g["gitems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["color"].as_str().map(str::to_string))
                .collect();
            colors.insert(id.clone(), c);
            names.insert(id, g["name"].as_str().unwrap_or_default().to_string());
        }
        let dashboards = lab
            .call(
                "templatedashboard.get",
                json!({"output": ["dashboardid", "name"], "templateids": [template]}),
            )
            .expect("templatedashboard.get");
        let dashboard = dashboards[0]["dashboardid"]
            .as_str()
            .expect("the app template's dashboard")
            .to_string();

        // Log in as a person would, then open the host's dashboard.
        let frontend = lab.facts().get("ZABBIX_FRONTEND_URL").to_string();
        let (user, password) = lab.facts().credentials();
        let mut b = Browser::launch(&chromium, WIDTH, HEIGHT).expect("start the browser");
        b.navigate(&format!("{frontend}index.php"))
            .expect("login page");
        wait_page(
            &mut b,
            "the login form",
            "document.readyState === 'complete' && !!document.getElementById('enter')",
        );
        b.eval(&format!(
            "document.getElementById('name').value = {}; \
             document.getElementById('password').value = {}; \
             document.getElementById('enter').click(); true",
            json!(user),
            json!(password)
        ))
        .expect("submit the login form");
        wait_page(
            &mut b,
            "the first page after login",
            "document.readyState === 'complete' && !document.getElementById('enter')",
        );
        b.navigate(&format!(
            "{frontend}zabbix.php?action=host.dashboard.view&hostid={}&dashboardid={dashboard}\
             &from=now-2m&to=now",
            host.hostid
        ))
        .expect("the dashboard");
        // Every graph widget loaded its image (the four widgets of page "Delivery"; the
        // prototype widget draws a graph per discovered timer).
        wait_page(
            &mut b,
            "the dashboard's chart images",
            "(() => { const i = [...document.images].filter(i => /chart\\d?\\.php/.test(i.src)); \
             return i.length >= 3 && i.every(i => i.complete && i.naturalWidth > 0); })()",
        );
        // No widget shows an error instead of its graphs.
        let errors = b
            .eval("[...document.querySelectorAll('.msg-bad')].map(e => e.innerText).join(' | ')")
            .expect("error messages");
        let shot = b.screenshot().expect("screenshot");
        let dir = target_dir().join("frontend");
        std::fs::create_dir_all(&dir).expect("target/frontend");
        let file = dir.join(format!("app-dashboard-{}.png", lab.version()));
        std::fs::write(&file, &shot).expect("write the screenshot");
        assert_eq!(
            errors,
            json!(""),
            "widgets show errors (screenshot {})",
            file.display()
        );
        let measured = b
            .eval(&format!("{MEASURE}({})", json!(colors)))
            .expect("measure the charts");
        let charts: Vec<Value> = measured.as_array().cloned().unwrap_or_default();
        assert!(shot.starts_with(b"\x89PNG"), "the screenshot is no PNG");
        let mut drawn = Vec::new();
        for c in &charts {
            let id = c["graphid"].as_str().unwrap_or_default();
            // chart3.php's name is "HOST: GRAPH".
            let name = names.get(id).cloned().unwrap_or_else(|| {
                let n = c["name"].as_str().unwrap_or_default();
                n.strip_prefix(&format!("{}: ", host.name))
                    .unwrap_or(n)
                    .to_string()
            });
            let (w, h) = (c["w"].as_u64().unwrap_or(0), c["h"].as_u64().unwrap_or(0));
            let (live, empty) = (
                c["live"].as_u64().unwrap_or(0),
                c["empty"].as_u64().unwrap_or(0),
            );
            assert!(
                w >= 200 && h >= 100,
                "{name}: a {w}x{h} image is no graph (a frontend error is one line of text)"
            );
            if name != SLOW_GRAPH {
                assert!(
                    live >= empty + 20,
                    "{name}: {live} pixels of its colours with data, {empty} without: no data drawn ({})",
                    c["src"]
                );
            }
            drawn.push(format!("{name} {w}x{h}: {live} vs {empty} px"));
        }
        for must in [
            "Concierge: Courier delivery time",
            "Concierge: Courier status",
        ] {
            assert!(
                drawn.iter().any(|d| d.starts_with(must)),
                "{must} is not on the dashboard: {drawn:?}"
            );
        }
        note(&format!(
            "frontend {} ({}): host fed in {fed:.1?}; dashboard drawn with {} charts [{}]; \
             screenshot {} ({} bytes); total {:.1?}",
            lab.api_version(),
            frontend,
            charts.len(),
            drawn.join("; "),
            file.display(),
            shot.len(),
            t0.elapsed()
        ));
    }
);
