//! Finding tollgate's plugin configurations in a file: the file itself (plugin JSON), or the
//! tollgate Wasm filters of an Envoy configuration, or an Istio `WasmPlugin` / Envoy Gateway
//! `EnvoyExtensionPolicy` manifest.
//!
//! A Wasm filter is tollgate's when its plugin `name`, `root_id` or `vm_id` is `tollgate`, or
//! its code is a file or URL ending in `tollgate.wasm`. Envoy hands the filter the string of
//! `configuration.value` (a `google.protobuf.StringValue`); that string is what is checked.

use std::path::Path;

use serde_norway::Value;
use tollgate::config::{Config, ConfigError};

use crate::environment::Environment;

const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// One plugin configuration found in a file.
pub struct Found {
    /// Where it is in the file (`listener gateway, plugin tollgate`); empty for a file that
    /// is a plugin configuration.
    pub place: String,
    /// The configuration text the filter would receive, or why there is none.
    pub text: Result<String, String>,
    /// Where the text's first line is in the file (1-based line, columns of indentation), when
    /// the text appears verbatim there (a JSON file, a YAML literal block).
    block: Option<(usize, usize)>,
}

impl Found {
    /// `FILE` or `FILE: place`.
    pub fn heading(&self, file: &str) -> String {
        if self.place.is_empty() {
            file.to_string()
        } else {
            format!("{file}: {}", self.place)
        }
    }

    /// Compiles the configuration as the filter does (secrets' variables read from `env`).
    pub fn compile(&self, env: &Environment) -> Result<Config, ConfigError> {
        match &self.text {
            Ok(text) => Config::from_json_in(text.as_bytes(), &|name| env.var(name)),
            Err(e) => Err(ConfigError(e.clone())),
        }
    }

    /// For a JSON syntax error: its position in the file rather than in the plugin text.
    pub fn syntax_error_position(&self) -> Option<(usize, usize)> {
        let text = self.text.as_ref().ok()?;
        let (first_line, indent) = self.block?;
        let error = serde_json::from_str::<serde::de::IgnoredAny>(text).err()?;
        if !error.is_syntax() && !error.is_eof() {
            return None;
        }
        if error.line() == 0 {
            return None;
        }
        Some((first_line + error.line() - 1, error.column() + indent))
    }
}

/// Every tollgate configuration in `path`, or why the file cannot be used.
pub fn read(path: &Path) -> Result<Vec<Found>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let documents: Vec<Value> = if yaml {
        let mut documents = Vec::new();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = serde::Deserialize::deserialize(document)
                .map_err(|e| format!("not valid YAML: {e}"))?;
            documents.push(value);
        }
        documents
    } else {
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => vec![value],
            // Not even JSON: a plugin configuration, so that the filter's own message (line,
            // column, caret) explains it.
            Err(_) => return Ok(vec![plugin_file(text)]),
        }
    };
    let mut search = Search::default();
    for document in &documents {
        search.walk(document, "", None);
    }
    if !search.found.is_empty() {
        number_duplicates(&mut search.found);
        for found in &mut search.found {
            if let Ok(config) = &found.text {
                found.block = locate_block(&text, config);
            }
        }
        return Ok(search.found);
    }
    if !yaml {
        // A JSON file without a Wasm filter is a plugin configuration.
        return Ok(vec![plugin_file(text)]);
    }
    match documents.as_slice() {
        [single] if single.get("plans").is_some() => Ok(vec![Found {
            place: String::new(),
            text: serde_json::to_string_pretty(single).map_err(|e| e.to_string()),
            block: None,
        }]),
        _ => {
            let mut message = "no tollgate configuration found (looked for a Wasm filter whose \
                               name, root_id or vm_id is tollgate or whose code is tollgate.wasm, \
                               an Istio WasmPlugin and an Envoy Gateway EnvoyExtensionPolicy)"
                .to_string();
            if !search.skipped.is_empty() {
                message.push_str(&format!(
                    "; other Wasm filters: {}",
                    search.skipped.join(", ")
                ));
            }
            Err(message)
        }
    }
}

fn plugin_file(text: String) -> Found {
    Found {
        place: String::new(),
        text: Ok(text),
        block: Some((1, 0)),
    }
}

#[derive(Default)]
struct Search {
    found: Vec<Found>,
    /// Wasm filters that are not tollgate's (named in the "not found" message).
    skipped: Vec<String>,
}

fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut at = value;
    for key in path {
        at = at.get(*key)?;
    }
    at.as_str()
}

impl Search {
    /// Walks a YAML tree; `listener` is the name of the listener being walked, if any.
    fn walk(&mut self, value: &Value, key: &str, listener: Option<&str>) {
        match value {
            Value::Mapping(map) => {
                let kind = str_at(value, &["kind"]);
                let type_url = str_at(value, &["@type"]);
                let mut listener = listener.map(str::to_string);
                if type_url == Some(LISTENER) || key == "listeners" {
                    listener = str_at(value, &["name"]).map(str::to_string).or(listener);
                }
                if type_url == Some(WASM_FILTER) {
                    self.wasm_filter(value, listener.as_deref());
                } else if kind == Some("WasmPlugin") {
                    self.wasm_plugin(value);
                } else if kind == Some("EnvoyExtensionPolicy") {
                    self.extension_policy(value);
                }
                for (k, v) in map {
                    self.walk(v, k.as_str().unwrap_or(""), listener.as_deref());
                }
            }
            Value::Sequence(items) => {
                for item in items {
                    self.walk(item, key, listener);
                }
            }
            Value::Tagged(tagged) => self.walk(&tagged.value, key, listener),
            _ => {}
        }
    }

    fn wasm_filter(&mut self, filter: &Value, listener: Option<&str>) {
        let Some(config) = filter.get("config") else {
            return;
        };
        let name = str_at(config, &["name"]).unwrap_or("");
        let tollgate = [
            str_at(config, &["name"]),
            str_at(config, &["root_id"]),
            str_at(config, &["vm_config", "vm_id"]),
        ]
        .contains(&Some("tollgate"))
            || [
                str_at(config, &["vm_config", "code", "local", "filename"]),
                str_at(config, &["vm_config", "code", "remote", "http_uri", "uri"]),
            ]
            .iter()
            .flatten()
            .any(|code| code.ends_with("tollgate.wasm"));
        let place = match listener {
            Some(listener) => format!("listener {listener}, plugin {name}"),
            None => format!("plugin {name}"),
        };
        if !tollgate {
            self.skipped.push(place);
            return;
        }
        let text = match config.get("configuration") {
            None => Ok(String::new()),
            Some(configuration) => match str_at(configuration, &["@type"]) {
                Some(STRING_VALUE) => match configuration.get("value") {
                    None => Ok(String::new()),
                    Some(Value::String(text)) => Ok(text.clone()),
                    Some(_) => Err("configuration.value is not a string".to_string()),
                },
                other => Err(format!(
                    "configuration is a {}; tollgate reads a {STRING_VALUE} holding its JSON",
                    other.unwrap_or("message without @type")
                )),
            },
        };
        self.found.push(Found {
            place,
            text,
            block: None,
        });
    }

    fn wasm_plugin(&mut self, manifest: &Value) {
        let name = str_at(manifest, &["metadata", "name"]).unwrap_or("");
        let spec = manifest.get("spec");
        let ours = [
            Some(name),
            spec.and_then(|s| str_at(s, &["pluginName"])),
            spec.and_then(|s| str_at(s, &["url"])),
        ]
        .iter()
        .flatten()
        .any(|s| s.contains("tollgate"));
        if let (true, Some(config)) = (ours, spec.and_then(|s| s.get("pluginConfig"))) {
            self.found.push(Found {
                place: format!("WasmPlugin {name}"),
                text: serde_json::to_string_pretty(config).map_err(|e| e.to_string()),
                block: None,
            });
        }
    }

    fn extension_policy(&mut self, manifest: &Value) {
        let name = str_at(manifest, &["metadata", "name"]).unwrap_or("");
        let Some(Value::Sequence(modules)) = manifest.get("spec").and_then(|s| s.get("wasm"))
        else {
            return;
        };
        for module in modules {
            let module_name = str_at(module, &["name"]).unwrap_or("");
            let ours = [
                Some(module_name),
                str_at(module, &["rootID"]),
                str_at(module, &["code", "http", "url"]),
                str_at(module, &["code", "image", "url"]),
            ]
            .iter()
            .flatten()
            .any(|s| s.contains("tollgate"));
            if let (true, Some(config)) = (ours, module.get("config")) {
                self.found.push(Found {
                    place: format!("EnvoyExtensionPolicy {name}, wasm {module_name}"),
                    text: serde_json::to_string_pretty(config).map_err(|e| e.to_string()),
                    block: None,
                });
            }
        }
    }
}

/// Two configurations at the same place (two listeners without names, say) get `#1`, `#2`.
fn number_duplicates(found: &mut [Found]) {
    let places: Vec<String> = found.iter().map(|f| f.place.clone()).collect();
    for (i, f) in found.iter_mut().enumerate() {
        let same: Vec<usize> = places
            .iter()
            .enumerate()
            .filter(|(_, p)| **p == f.place)
            .map(|(j, _)| j)
            .collect();
        if same.len() > 1 {
            let n = same.iter().position(|j| *j == i).map_or(0, |p| p + 1);
            f.place = format!("{} #{n}", f.place);
        }
    }
}

/// Where `block` (a YAML literal block's content) starts in `file`: the 1-based line and the
/// indentation, if its lines appear there exactly once, in order, equally indented.
fn locate_block(file: &str, block: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = file.lines().collect();
    let wanted: Vec<&str> = block.lines().collect();
    let first = wanted.first().filter(|l| !l.trim().is_empty())?;
    let mut matches = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if line.get(indent..) != Some(*first) {
            continue;
        }
        let fits = wanted.iter().enumerate().all(|(i, want)| {
            let Some(have) = lines.get(start + i) else {
                return false;
            };
            if want.is_empty() {
                have.trim().is_empty()
            } else {
                have.len() >= indent
                    && have.get(..indent).is_some_and(|p| p.trim().is_empty())
                    && have.get(indent..) == Some(*want)
            }
        });
        if fits {
            matches.push((start + 1, indent));
        }
    }
    match matches.as_slice() {
        [only] => Some(*only),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_block_is_found_with_its_indentation() {
        let file = "a:\n  value: |\n    {\n      \"plans\": 1\n\n    }\nb: 2\n";
        assert_eq!(locate_block(file, "{\n  \"plans\": 1\n\n}\n"), Some((3, 4)));
        assert_eq!(locate_block(file, "{\n  \"other\": 1\n}"), None);
        let twice = format!("{file}c: |\n    {{\n      \"plans\": 1\n\n    }}\n");
        assert_eq!(locate_block(&twice, "{\n  \"plans\": 1\n\n}\n"), None);
    }
}
