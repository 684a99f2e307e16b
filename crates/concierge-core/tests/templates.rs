//! The shipped Zabbix templates and the code agree: every item prototype of "Concierge app"
//! is the key the courier delivers to, for every kind and default statistic, under the LLD
//! macro discover emits. A drift on either side would leave items that never get data.

use concierge_core::metrics::Kind;
use concierge_core::zabbix::key::KeyTemplate;
use concierge_core::zabbix::lld;

const APP: &str = include_str!("../../../zabbix-templates/concierge_app.yaml");

#[test]
fn every_default_key_has_its_prototype_in_the_app_template() {
    for kind in Kind::ALL {
        assert!(
            lld::is_valid_macro(kind.lld_macro()),
            "{}",
            kind.lld_macro()
        );
        let template: KeyTemplate = kind.default_key_template().parse().unwrap();
        assert!(
            APP.contains(&format!(
                "key: 'concierge.discover[{kind},{{$METRICS_URL}}]'"
            )),
            "no LLD rule for {kind}"
        );
        for stat in kind.default_stats() {
            let prototype = template.lld_prototype(kind.lld_macro(), Some(stat));
            assert!(
                APP.contains(&format!("key: '{prototype}'")),
                "the app template lacks the prototype {prototype}"
            );
        }
    }
}
