//! `FilterTemplate`: the filter's configuration as pepctl serves it over ECDS. The operator
//! renders it once (`pepctl render filter-config`, no `--sync-url`); pepctl puts the
//! repository's table and generation into it at each change, checks the result with the
//! filter's own parser, and wraps it as Envoy's `TypedExtensionConfig` of a Wasm HTTP filter:
//! the same VM (`vm_id`, code) as `render envoy` writes, so Envoy keeps its VM, and the filter
//! its caches, across tables.

use std::path::Path;

use envoy_types::pb::envoy::config::core::v3::{
    async_data_source, data_source, AsyncDataSource, DataSource, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, FailurePolicy, PluginConfig, VmConfig};
use envoy_types::pb::google::protobuf::{Any, StringValue};
use prost::Message;
use serde_json::{Map, Value};
use uma_pep_core::config::{PepConfig, Resource};

use super::XdsError;

/// The Wasm plugin as `render envoy` writes it and `serve --xds-listen` serves it: one VM
/// (`vm_id` and code), which Envoy keeps across configurations, and with it the filter's
/// shared caches.
pub const WASM_PLUGIN_NAME: &str = "uma_pep";
pub const WASM_VM_ID: &str = "uma_pep";
pub const WASM_RUNTIME: &str = "envoy.wasm.runtime.v8";

/// The type of every ECDS resource.
pub const TYPED_EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// The type of the extension inside: Envoy's Wasm HTTP filter (the `type_urls` of the
/// listener's `config_discovery`).
pub const WASM_HTTP_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

pub struct FilterTemplate {
    /// The rendered configuration without its table.
    base: Map<String, Value>,
    /// The module as Envoy opens it (absolute).
    wasm: String,
    /// The ECDS resource name: the `name` of the HTTP filter whose `config_discovery` asks for it.
    pub name: String,
}

impl FilterTemplate {
    /// Reads the rendered filter configuration at `config` and checks it with an empty table.
    pub fn load(config: &Path, wasm: &Path, name: &str) -> Result<Self, XdsError> {
        let shown = config.display().to_string();
        let bad = |problem: String| XdsError::FilterConfig { path: shown.clone(), problem };
        let bytes = std::fs::read(config).map_err(|e| bad(e.to_string()))?;
        let base: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!("not a JSON object ({e}); give what `pepctl render filter-config` prints"))
        })?;
        Self::from_document(base, wasm, name).map_err(|e| match e {
            XdsError::FilterConfig { problem, .. } => bad(problem),
            other => other,
        })
    }

    pub fn from_document(mut base: Map<String, Value>, wasm: &Path, name: &str) -> Result<Self, XdsError> {
        let bad = |problem: String| XdsError::FilterConfig { path: String::new(), problem };
        if base.contains_key("resource_sync") {
            return Err(bad(
                "has `resource_sync`: over xDS the table travels in the configuration itself; render it without --sync-url".into(),
            ));
        }
        // The table is the repository's, put in at each publication.
        base.remove("resources");
        base.remove("resource_generation");
        let wasm = std::path::absolute(wasm)
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
            .ok_or_else(|| XdsError::Wasm(wasm.display().to_string()))?;
        if name.trim().is_empty() {
            return Err(XdsError::ResourceName);
        }
        let template = Self { base, wasm, name: name.to_string() };
        template.document(Vec::new(), None).map_err(|e| match e {
            XdsError::Table(problem) => bad(problem),
            other => other,
        })?;
        Ok(template)
    }

    /// The configuration with `resources` and `generation`, checked by the filter's parser.
    pub fn document(&self, resources: Vec<Resource>, generation: Option<&str>) -> Result<String, XdsError> {
        let mut doc = self.base.clone();
        let resources = serde_json::to_value(resources).map_err(|e| XdsError::Table(e.to_string()))?;
        doc.insert("resources".into(), resources);
        if let Some(g) = generation {
            doc.insert("resource_generation".into(), Value::String(g.to_string()));
        }
        let text = Value::Object(doc).to_string();
        PepConfig::from_json(text.as_bytes()).map_err(|e| XdsError::Table(e.to_string()))?;
        Ok(text)
    }

    /// The ECDS resource carrying `document`.
    pub fn extension(&self, document: String) -> Any {
        let configuration =
            Any { type_url: STRING_VALUE.into(), value: StringValue { value: document }.encode_to_vec() };
        let code = AsyncDataSource {
            specifier: Some(async_data_source::Specifier::Local(DataSource {
                specifier: Some(data_source::Specifier::Filename(self.wasm.clone())),
                ..Default::default()
            })),
        };
        let wasm = Wasm {
            config: Some(PluginConfig {
                name: WASM_PLUGIN_NAME.into(),
                configuration: Some(configuration),
                failure_policy: FailurePolicy::FailClosed.into(),
                vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                    vm_id: WASM_VM_ID.into(),
                    runtime: WASM_RUNTIME.into(),
                    code: Some(code),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        };
        let typed = TypedExtensionConfig {
            name: self.name.clone(),
            typed_config: Some(Any { type_url: WASM_HTTP_FILTER.into(), value: wasm.encode_to_vec() }),
        };
        Any { type_url: TYPED_EXTENSION_CONFIG.into(), value: typed.encode_to_vec() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Map<String, Value> {
        match json!({"issuer": "https://as.example", "client_id": "pep", "client_secret": "s", "as_cluster": "as",
                     "resources": [{"id": "stale", "uri": "/stale"}]})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_table_is_the_repositorys_and_the_wasm_filter_wraps_it() {
        let t = FilterTemplate::from_document(base(), Path::new("/m/uma_pep.wasm"), "uma-pep").unwrap();
        let r: Resource = serde_json::from_value(json!({"id": "r1", "uri": "/a"})).unwrap();
        let doc = t.document(vec![r], Some("g1")).unwrap();
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["resources"][0]["id"], "r1");
        assert_eq!(v["resources"].as_array().unwrap().len(), 1, "the rendered table is replaced");
        assert_eq!(v["resource_generation"], "g1");

        let any = t.extension(doc.clone());
        assert_eq!(any.type_url, TYPED_EXTENSION_CONFIG);
        let typed = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
        assert_eq!(typed.name, "uma-pep");
        let inner = typed.typed_config.unwrap();
        assert_eq!(inner.type_url, WASM_HTTP_FILTER);
        let plugin = Wasm::decode(inner.value.as_slice()).unwrap().config.unwrap();
        assert_eq!(plugin.failure_policy, i32::from(FailurePolicy::FailClosed));
        let config = StringValue::decode(plugin.configuration.unwrap().value.as_slice()).unwrap();
        assert_eq!(config.value, doc);
        let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm else { panic!("no vm") };
        assert_eq!((vm.vm_id.as_str(), vm.runtime.as_str()), (WASM_VM_ID, WASM_RUNTIME));
    }

    #[test]
    fn what_the_filter_would_refuse_is_refused_here() {
        let mut b = base();
        b.insert("resource_sync".into(), json!({"cluster": "pepctl"}));
        let e = FilterTemplate::from_document(b, Path::new("/m.wasm"), "uma-pep").err().unwrap().to_string();
        assert!(e.contains("--sync-url"), "{e}");
        let mut b = base();
        b.insert("issuer".into(), json!("not a url"));
        let e = FilterTemplate::from_document(b, Path::new("/m.wasm"), "uma-pep").err().unwrap().to_string();
        assert!(e.contains("issuer"), "{e}");
        let t = FilterTemplate::from_document(base(), Path::new("/m.wasm"), "uma-pep").unwrap();
        let dup: Vec<Resource> =
            serde_json::from_value(json!([{"id": "a", "uri": "/a"}, {"id": "b", "uri": "/a"}])).unwrap();
        assert!(t.document(dup, Some("g")).is_err());
    }
}
