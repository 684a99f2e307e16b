//! The reader on whole documents: families, roles, selection, skips and errors.

use super::*;

fn read_all(doc: &str, format: Format) -> Exposition {
    read(doc.as_bytes(), format, &Options::default()).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

fn err(doc: &str, format: Format) -> ParseError {
    read(doc.as_bytes(), format, &Options::default()).unwrap_err()
}

/// `name{labels} value role` per series.
fn lines(e: &Exposition) -> Vec<String> {
    e.series
        .iter()
        .map(|s| {
            format!(
                "{} {} {:?} {}",
                series_text(&s.name, &s.labels_text),
                s.value,
                s.role,
                e.family_of(s).kind
            )
        })
        .collect()
}

/// The example of the text format documentation (exposition_formats.md), plus a quoted name.
const TEXT: &str = include_str!("testdata/text_format_example.txt");

#[test]
fn the_text_format_example() {
    let e = read_all(TEXT, Format::Text);
    let got = lines(&e);
    assert_eq!(got.len(), 2 + 1 + 1 + 8 + 7, "{got:#?}");
    assert_eq!(
        got[0],
        r#"http_requests_total{code="200",method="post"} 1027 Total counter"#
    );
    assert_eq!(
        got[2],
        r#"msdos_file_access_time_seconds{error="Cannot find file:\n\"FILE.TXT\"",path="C:\\DIR\\FILE.TXT"} 1458255915 Value untyped"#
    );
    assert_eq!(
        e.series[0].clock,
        Some(Clock {
            secs: 1395066363,
            nanos: 0
        })
    );
    // Before 1970: a counted skip, not an error.
    assert_eq!(e.skips.bad_timestamps, 1);
    assert!(
        e.skips.examples[0].starts_with("something_weird{"),
        "{:?}",
        e.skips
    );
    assert!(got.contains(
        &r#"http_request_duration_seconds_bucket{le="+Inf"} 144320 Bucket histogram"#.to_string()
    ));
    assert!(got.contains(&"http_request_duration_seconds_sum 53423 Sum histogram".to_string()));
    assert!(got
        .contains(&r#"rpc_duration_seconds{quantile="0.99"} 76656 Quantile summary"#.to_string()));
    assert!(got.contains(&"rpc_duration_seconds_count 2693 Count summary".to_string()));
    let help = &e.families[e.series[0].family].help;
    assert_eq!(help, "The total number of HTTP requests.");
    // Units: from the name, by role.
    let unit = |name: &str| {
        let s = e.series.iter().find(|s| s.name == name).unwrap();
        e.unit_of(s)
    };
    assert_eq!(unit("http_request_duration_seconds_sum"), "s");
    assert_eq!(unit("http_request_duration_seconds_bucket"), "");
    assert_eq!(unit("rpc_duration_seconds"), "s");
    assert_eq!(unit("http_requests_total"), "");
}

const OPENMETRICS: &str = r#"# TYPE acme_http_router_request_seconds summary
# UNIT acme_http_router_request_seconds seconds
# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.
acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32
acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0
acme_http_router_request_seconds_created{path="/api/v1",method="GET"} 1605281325.0
# TYPE go_goroutines gauge
# HELP go_goroutines Number of goroutines that currently exist.
go_goroutines 69
# TYPE process_cpu_seconds counter
# UNIT process_cpu_seconds seconds
# HELP process_cpu_seconds Total user and system CPU time spent in seconds.
process_cpu_seconds_total 4.20072246e+06
# TYPE foo info
foo_info{name="pretty name",version="8.2.7"} 1
# TYPE state stateset
state{state="a"} 0
state{state="bb"} 1
# TYPE q gaugehistogram
q_bucket{le="1"} 2 # {trace_id="x"} 0.5 123
q_bucket{le="+Inf"} 4
q_gcount 4
q_gsum 7.5
# TYPE u unknown
u 1 1520879607.789
# EOF
"#;

#[test]
fn the_openmetrics_example_and_every_type() {
    let e = read_all(OPENMETRICS, Format::OpenMetrics);
    let got = lines(&e);
    assert_eq!(
        got,
        [
            r#"acme_http_router_request_seconds_sum{method="GET",path="/api/v1"} 9036.32 Sum summary"#,
            r#"acme_http_router_request_seconds_count{method="GET",path="/api/v1"} 807283 Count summary"#,
            "go_goroutines 69 Value gauge",
            "process_cpu_seconds_total 4200722.46 Total counter",
            r#"foo_info{name="pretty name",version="8.2.7"} 1 Info info"#,
            r#"state{state="a"} 0 State stateset"#,
            r#"state{state="bb"} 1 State stateset"#,
            r#"q_bucket{le="1"} 2 Bucket gaugehistogram"#,
            r#"q_bucket{le="+Inf"} 4 Bucket gaugehistogram"#,
            "q_gcount 4 Count gaugehistogram",
            "q_gsum 7.5 Sum gaugehistogram",
            "u 1 Value unknown",
        ]
    );
    assert_eq!(
        e.series.last().unwrap().clock,
        Some(Clock {
            secs: 1520879607,
            nanos: 789_000_000
        })
    );
    let unit = |i: usize| e.unit_of(&e.series[i]);
    assert_eq!(
        (unit(0), unit(1), unit(3)),
        ("s".into(), "".into(), "s".into())
    );
    assert_eq!(rate_unit(&unit(3)), "s/s");
    assert_eq!(rate_unit("B"), "Bps");
}

#[test]
fn format_by_content_type_or_eof() {
    assert_eq!(
        Format::detect(
            None,
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            b"x 1\n"
        ),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::detect(None, Some("text/plain; version=0.0.4"), b"# EOF\n"),
        Format::Text
    );
    assert_eq!(
        Format::detect(None, None, b"x 1\n# EOF\n\n"),
        Format::OpenMetrics
    );
    assert_eq!(Format::detect(None, None, b"# EOF"), Format::OpenMetrics);
    assert_eq!(
        Format::detect(None, Some("application/json"), b"x 1\n"),
        Format::Text
    );
    assert_eq!(
        Format::detect(
            Some(Format::Text),
            Some("application/openmetrics-text"),
            b""
        ),
        Format::Text
    );
    assert_eq!("openmetrics".parse(), Ok(Format::OpenMetrics));
    assert!("json".parse::<Format>().is_err());
}

#[test]
fn openmetrics_must_end_with_eof() {
    let e = err("# TYPE a gauge\na 1\n", Format::OpenMetrics);
    assert_eq!((e.line, e.kind.clone()), (3, ErrorKind::MissingEof));
    assert_eq!(
        e.to_string(),
        "line 3: the OpenMetrics document does not end with # EOF (cut short?)"
    );
    assert_eq!(err("a 1", Format::OpenMetrics).line, 2);
    let e = err("a 1\n# EOF\nb 2\n", Format::OpenMetrics);
    assert_eq!((e.line, e.kind), (3, ErrorKind::AfterEof));
    // Text: no # EOF needed; one is a comment.
    assert_eq!(read_all("a 1\n# EOF\nb 2\n", Format::Text).series.len(), 2);
    assert_eq!(read_all("# EOF\n", Format::OpenMetrics).series.len(), 0);
}

#[test]
fn errors_name_line_column_and_text() {
    let e = err("a 1\nb{x=\"unterminated} 2\n", Format::Text);
    assert_eq!((e.line, e.column), (2, 5));
    assert_eq!(
        e.to_string(),
        r#"line 2, column 5: unterminated label value near "\"unterminated} 2""#
    );
    let long = format!("x{{a=\"{}", "é".repeat(100));
    let e = err(&long, Format::Text);
    assert!(e.to_string().ends_with("…\""), "{e}");
    assert!(e.to_string().chars().count() < 120, "{e}");
    let e = err("# TYPE a histogramm\n", Format::Text);
    assert_eq!(
        e.to_string(),
        "line 1: unknown metric type \"histogramm\" near \"# TYPE a histogramm\""
    );
    let e = read(b"a 1\n\xff 2\n", Format::Text, &Options::default()).unwrap_err();
    assert_eq!((e.line, e.kind), (2, ErrorKind::NotUtf8));
    let e = err(
        &format!("a{{b=\"{}\"}} 1\n", "x".repeat(MAX_LINE)),
        Format::Text,
    );
    assert_eq!((e.line, e.kind), (1, ErrorKind::LineTooLong));
    let e = err(
        "# TYPE a gauge\n# TYPE a counter\n# EOF\n",
        Format::OpenMetrics,
    );
    assert_eq!(e.kind, ErrorKind::DuplicateMetadata("TYPE", "a".into()));
    let e = err("a 1\r\n# EOF\n", Format::OpenMetrics);
    assert_eq!(e.kind, ErrorKind::CarriageReturn);
    let e = err("# a comment\n# EOF\n", Format::OpenMetrics);
    assert_eq!(e.kind, ErrorKind::Comment);
    // Control characters in the excerpt are escaped.
    let e = err("a\u{1b}[31m 1\n", Format::Text);
    assert!(e.to_string().contains("\\u{1b}"), "{e}");
}

#[test]
fn text_format_is_lenient_where_prometheus_is() {
    // Second TYPE/HELP ignored; CRLF accepted; comments anywhere.
    let e = read_all(
        "# TYPE a gauge\n# TYPE a counter\n# HELP a one\n# HELP a two\r\na 1\r\n",
        Format::Text,
    );
    assert_eq!(e.families[0].kind, MetricType::Gauge);
    assert_eq!(e.families[0].help, "one");
    assert_eq!(e.series[0].value, 1.0);
}

#[test]
fn duplicate_series_keep_the_first() {
    let e = read_all(
        "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\na{x=\"1\"} 3\n",
        Format::Text,
    );
    assert_eq!(
        e.series.iter().map(|s| s.value).collect::<Vec<_>>(),
        [1.0, 3.0]
    );
    assert_eq!(e.skips.duplicates, 1);
    assert_eq!(e.skips.examples, [r#"a{x="1",y="2"}: series given twice"#]);
    let e = err("a{x=\"1\",x=\"2\"} 1\n", Format::Text);
    assert_eq!(e.kind, ErrorKind::DuplicateLabel("x".into()));
}

#[test]
fn created_samples_are_left_out() {
    let doc = "# TYPE c counter\nc_total 3\nc_created 1.6e9\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_created 1.6e9\nh_count 1\n# EOF\n";
    let e = read_all(doc, Format::OpenMetrics);
    assert_eq!(
        e.series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["c_total", "h_bucket", "h_count"]
    );
}

#[test]
fn quoted_names_and_canonical_labels() {
    let e = read_all(
        "# TYPE \"my.gauge\" gauge\n# HELP \"my.gauge\" dotted\n{\"my.gauge\",\"my label\"=\"a\\\\b\",z=\"\"} 5\n",
        Format::Text,
    );
    let s = &e.series[0];
    assert_eq!(s.name, "my.gauge");
    assert_eq!(e.family_of(s).kind, MetricType::Gauge);
    assert_eq!(e.family_of(s).help, "dotted");
    // The empty label is no label.
    assert_eq!(s.labels_text, r#""my label"="a\\b""#);
    assert_eq!(
        series_text(&s.name, &s.labels_text),
        r#"{"my.gauge","my label"="a\\b"}"#
    );
    assert_eq!(series_text("up", ""), "up");
    assert_eq!(series_text("a.b", ""), r#"{"a.b"}"#);
}

#[test]
fn selection_applies_to_family_and_sample_names() {
    let options = Options {
        selection: Selection::new(
            &["http_request_*".into(), "rpc_*".into()],
            &["*_count".into()],
        ),
        quantiles: Vec::new(),
    };
    let e = read(TEXT.as_bytes(), Format::Text, &options).unwrap();
    let names: HashSet<&str> = e.series.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "http_request_duration_seconds_bucket",
            "http_request_duration_seconds_sum",
            "rpc_duration_seconds",
            "rpc_duration_seconds_sum"
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn quantiles_from_buckets() {
    let options = Options {
        selection: Selection::default(),
        quantiles: vec![0.5, 0.99],
    };
    let doc = "# TYPE h histogram\nh_bucket{a=\"x\",le=\"0.1\"} 50\nh_bucket{a=\"x\",le=\".2\"} 70\nh_bucket{a=\"x\",le=\"1e0\"} 110\nh_bucket{a=\"x\",le=\"+Inf\"} 120\nh_bucket{a=\"y\",le=\"+Inf\"} 0\nh_sum{a=\"x\"} 1\n";
    let e = read(doc.as_bytes(), Format::Text, &options).unwrap();
    let q: Vec<(String, f64)> = e
        .series
        .iter()
        .filter(|s| s.role == Role::Quantile)
        .map(|s| (series_text(&s.name, &s.labels_text), s.value))
        .collect();
    assert_eq!(q.len(), 4);
    assert_eq!(q[0].0, r#"h{a="x",quantile="0.5"}"#);
    assert!((q[0].1 - 0.15).abs() < 1e-12);
    assert_eq!(q[1], (r#"h{a="x",quantile="0.99"}"#.to_string(), 1.0));
    assert!(q[2].1.is_nan(), "no observations");
    assert_eq!(e.unit_of(&e.series[e.series.len() - 1]), "");
}

#[test]
fn values_format_for_zabbix() {
    assert_eq!(format_value(17.0).as_deref(), Some("17"));
    assert_eq!(format_value(0.1).as_deref(), Some("0.1"));
    assert_eq!(format_value(-2.5e-7).as_deref(), Some("-2.5e-7"));
    assert_eq!(format_value(1.7e300).as_deref(), Some("1.7e300"));
    assert_eq!(
        format_value(123456789012345.0).as_deref(),
        Some("123456789012345")
    );
    assert_eq!(format_value(1e15).as_deref(), Some("1e15"));
    assert_eq!(format_value(f64::NAN), None);
    assert_eq!(format_value(f64::NEG_INFINITY), None);
    for v in [0.1, 1.0 / 3.0, 1e-300, 4.9e-324, f64::MAX, 1727000000.123] {
        assert_eq!(format_value(v).unwrap().parse::<f64>().unwrap(), v);
    }
}
