//! Reading Kubernetes objects in the shapes `kubectl get ... -o json|yaml` prints: a `List`
//! (or a typed `ServiceList`, `EndpointSliceList`, `NodeList`), single objects, several
//! JSON documents one after another, or a YAML stream of documents.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde_json::Value;

/// The objects the proxy reads.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
    /// Objects of other kinds, passed over (named so the user sees them).
    pub warnings: Vec<String>,
}

/// Read every document in `text`. JSON first (one value or several in a row); otherwise
/// YAML (`---`-separated documents).
pub fn parse(text: &str) -> Result<Objects, String> {
    let docs: Vec<Value> = {
        let json: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect();
        match json {
            Ok(v) => v,
            Err(json_err) => {
                let mut v = Vec::new();
                for doc in serde_yaml_ng::Deserializer::from_str(text) {
                    match Value::deserialize(doc) {
                        Ok(x) => v.push(x),
                        Err(yaml_err) => {
                            return Err(format!("neither JSON ({json_err}) nor YAML ({yaml_err})"));
                        }
                    }
                }
                v
            }
        }
    };
    let mut out = Objects::default();
    for doc in docs {
        add(&mut out, doc, None)?;
    }
    Ok(out)
}

fn name_of(v: &Value) -> String {
    let m = v.get("metadata");
    let ns = m
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = m
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// Add one document; `item_kind` is the kind implied by a typed list (its items carry no
/// `kind`).
fn add(out: &mut Objects, mut doc: Value, item_kind: Option<&str>) -> Result<(), String> {
    if doc.is_null() {
        return Ok(()); // an empty YAML document
    }
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .or(item_kind)
        .map(str::to_string);
    let Some(kind) = kind else {
        return Err(format!(
            "object {} has no \"kind\" (give objects as kubectl prints them)",
            name_of(&doc)
        ));
    };
    if kind == "List" || kind.ends_with("List") {
        let implied = kind.strip_suffix("List").filter(|k| !k.is_empty());
        // Taken, not cloned: a 10,000-service list is most of the input.
        let items = match doc.get_mut("items").map(Value::take) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(format!("{kind}: \"items\" is not an array")),
        };
        for item in items {
            add(out, item, implied)?;
        }
        return Ok(());
    }
    let what = format!("{kind} {}", name_of(&doc));
    match kind.as_str() {
        "Service" => out.services.push(decode(doc, &what)?),
        "EndpointSlice" => out.slices.push(decode(doc, &what)?),
        "Node" => out.nodes.push(decode(doc, &what)?),
        _ => out.warnings.push(format!(
            "{what}: kind {kind:?} is not read by the proxy; skipped"
        )),
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(doc: Value, what: &str) -> Result<T, String> {
    serde_json::from_value(doc).map_err(|e| format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_typed_list_single_and_yaml() {
        let list = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"n"},"spec":{"clusterIP":"10.0.0.1","ports":[{"port":80}]}},
            {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"a-1","namespace":"n"},"addressType":"IPv4","endpoints":null},
            {"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"}},
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"n"}}]}"#;
        let o = parse(list).unwrap();
        assert_eq!((o.services.len(), o.slices.len(), o.nodes.len()), (1, 1, 1));
        assert_eq!(o.warnings.len(), 1);

        let typed = r#"{"kind":"ServiceList","apiVersion":"v1","items":[{"metadata":{"name":"web","namespace":"shop"},"spec":{"clusterIP":"10.96.12.34","ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080}]}}]}"#;
        assert_eq!(parse(typed).unwrap().services.len(), 1);

        let two = r#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"x"}}
{"kind":"Node","apiVersion":"v1","metadata":{"name":"y"}}"#;
        assert_eq!(parse(two).unwrap().nodes.len(), 2);

        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.0.0.1}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n}\n";
        let o = parse(yaml).unwrap();
        assert_eq!((o.services.len(), o.nodes.len()), (1, 1));
    }

    #[test]
    fn errors_name_the_object() {
        let bad = r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"a","namespace":"n"},"spec":{"ports":"x"}}"#;
        let e = parse(bad).unwrap_err();
        assert!(e.starts_with("Service n/a: "), "{e}");
        assert!(parse(r#"{"metadata":{"name":"a"}}"#).is_err());
        assert!(parse("{ not json: [").is_err());
    }
}
