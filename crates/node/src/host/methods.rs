//! What a module declared it serves: the methods of its `Hello`, or of its
//! JSON-RPC `initialize` result. A declared module's unknown method is
//! answered at the router, listing the methods it has, with no round trip;
//! an undeclared one gets every request, as before declarations existed.

use polis_mesh::pb;
use serde::Deserialize;
use tonic::Status;

/// A module's declaration: `None` when it declared nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Declared(Option<Vec<pb::Method>>);

impl Declared {
    /// From a frames module's `Hello`.
    pub(crate) fn from_hello(hello: &pb::Hello) -> Self {
        Self(hello.declared.then(|| sorted(hello.methods.clone())))
    }

    /// From a JSON-RPC module's `initialize` result: `{"methods": [...]}`,
    /// each `{"name", "doc", "stream", "params", "result"}` (the last two
    /// JSON Schemas). No `methods` key is undeclared; one that does not
    /// parse is refused, naming what is wrong.
    pub(crate) fn from_initialize(result: Option<&[u8]>) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Result {
            methods: Option<Vec<Method>>,
        }
        #[derive(Deserialize)]
        struct Method {
            name: String,
            #[serde(default)]
            doc: String,
            #[serde(default)]
            stream: bool,
            params: Option<serde_json::Value>,
            result: Option<serde_json::Value>,
        }
        let Some(data) = result.filter(|d| !d.is_empty()) else { return Ok(Self(None)) };
        // Any result that is not an object declares nothing: modules older
        // than declarations answer what they like.
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return Ok(Self(None)) };
        if !value.is_object() {
            return Ok(Self(None));
        }
        let parsed: Result = serde_json::from_value(value)
            .map_err(|e| format!("its initialize result has bad methods: {e}"))?;
        let schema = |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_default();
        Ok(Self(parsed.methods.map(|methods| {
            sorted(
                methods
                    .into_iter()
                    .map(|m| pb::Method {
                        name: m.name,
                        doc: m.doc,
                        stream: m.stream,
                        params_schema: schema(m.params),
                        result_schema: schema(m.result),
                    })
                    .collect(),
            )
        })))
    }

    /// Whether the module declared its methods.
    pub(crate) fn declared(&self) -> bool {
        self.0.is_some()
    }

    /// The methods declared, sorted by name; empty when undeclared.
    pub(crate) fn methods(&self) -> &[pb::Method] {
        self.0.as_deref().unwrap_or_default()
    }

    /// `NOT_FOUND`, listing the methods, when `service` declared its
    /// methods and `method` is not one of them.
    pub(crate) fn check(&self, service: &str, method: &str) -> Result<(), Status> {
        let Some(methods) = &self.0 else { return Ok(()) };
        if methods.iter().any(|m| m.name == method) {
            return Ok(());
        }
        let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
        let has = if names.is_empty() { "no methods".to_owned() } else { names.join(", ") };
        Err(Status::not_found(format!("module {service} has no method {method:?}; it has {has}")))
    }
}

impl super::Host {
    /// What `service` serves (`Admin.Describe`), loading it if needed.
    pub(crate) async fn describe(
        self: &std::sync::Arc<Self>,
        service: &str,
    ) -> Result<pb::DescribeReply, Status> {
        let instance = self.instance(service).await?;
        Ok(pb::DescribeReply {
            service: instance.name.clone(),
            version: instance.version.clone(),
            protocol: instance.protocol.to_string(),
            declared: instance.declared.declared(),
            methods: instance.declared.methods().to_vec(),
        })
    }
}

fn sorted(mut methods: Vec<pb::Method>) -> Vec<pb::Method> {
    methods.sort_by(|a, b| a.name.cmp(&b.name));
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initialize_result_declares_methods() {
        let result = br#"{"name":"py","methods":[{"name":"ping","doc":"answers pong"},
            {"name":"count","stream":true,"params":{"type":"object"}}]}"#;
        let declared = Declared::from_initialize(Some(result)).unwrap();
        assert!(declared.declared());
        let names: Vec<_> = declared.methods().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["count", "ping"]);
        assert!(declared.methods()[0].stream);
        assert_eq!(declared.methods()[0].params_schema, r#"{"type":"object"}"#);
        assert!(declared.check("py", "ping").is_ok());
        let refused = declared.check("py", "nope").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound);
        assert_eq!(refused.message(), r#"module py has no method "nope"; it has count, ping"#);
    }

    #[test]
    fn no_methods_key_is_undeclared_and_bad_ones_are_refused() {
        for result in [&br#"{"name":"py"}"#[..], b"null", b"\"hi\"", b""] {
            let declared = Declared::from_initialize(Some(result)).unwrap();
            assert!(!declared.declared(), "{}", String::from_utf8_lossy(result));
            assert!(declared.check("py", "anything").is_ok());
        }
        let bad = Declared::from_initialize(Some(br#"{"methods":[{"doc":"no name"}]}"#)).unwrap_err();
        assert!(bad.contains("missing field `name`"), "{bad}");
    }

    #[test]
    fn an_empty_declaration_refuses_every_method() {
        let hello = pb::Hello { declared: true, ..Default::default() };
        let refused = Declared::from_hello(&hello).check("m", "x").unwrap_err();
        assert_eq!(refused.message(), r#"module m has no method "x"; it has no methods"#);
    }
}
