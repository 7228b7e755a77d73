//! XEP-0004 data forms as PubSub uses them: node configuration and publish-options are
//! `jabber:x:data` forms whose `FORM_TYPE` names the field set. Reading is bounded (fields,
//! values, value size) because the form comes from a peer.

use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_DATA_FORMS;
use franca_xml::Element;

/// Fields read from one form at most.
const MAX_FIELDS: usize = 64;
/// Values of one field at most (a roster group list, a whitelist).
const MAX_VALUES: usize = 256;
/// Largest single value, in bytes.
const MAX_VALUE_BYTES: usize = 2048;

/// A submitted form: `(var, values)` in document order, `FORM_TYPE` taken out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    pub form_type: Option<String>,
    pub fields: Vec<(String, Vec<String>)>,
}

impl Form {
    /// Read a `<x xmlns='jabber:x:data'/>`; a form over the bounds is `not-acceptable`.
    pub fn parse(x: &Element) -> Result<Form, StanzaError> {
        if !x.is("x", NS_DATA_FORMS) {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        let mut form = Form::default();
        for field in x.elements().filter(|e| e.is("field", NS_DATA_FORMS)) {
            if form.fields.len() >= MAX_FIELDS {
                return Err(StanzaError::new(Cond::NotAcceptable));
            }
            let var = field.attr("var").unwrap_or_default();
            let mut values = Vec::new();
            for v in field.elements().filter(|e| e.is("value", NS_DATA_FORMS)) {
                let v = v.text();
                if values.len() >= MAX_VALUES || v.len() > MAX_VALUE_BYTES {
                    return Err(StanzaError::new(Cond::NotAcceptable));
                }
                values.push(v);
            }
            if var == "FORM_TYPE" {
                form.form_type = values.into_iter().next();
            } else {
                form.fields.push((var.to_owned(), values));
            }
        }
        Ok(form)
    }

    /// The first value of `var`.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(v, _)| v == var)
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }
}

/// Start a form of `kind` (`form`, `submit`, `result`) with its `FORM_TYPE`.
pub fn new_form(kind: &str, form_type: &str) -> Element {
    Element::new("x", NS_DATA_FORMS)
        .with_attr("type", kind)
        .with_child(field("FORM_TYPE", &[form_type]).with_attr("type", "hidden"))
}

/// One field with its values.
pub fn field(var: &str, values: &[&str]) -> Element {
    let mut f = Element::new("field", NS_DATA_FORMS).with_attr("var", var);
    for v in values {
        f.push(Element::new("value", NS_DATA_FORMS).with_text(*v));
    }
    f
}

/// XEP-0004 booleans: `1`/`true` and `0`/`false`.
pub fn boolean(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::xml;

    #[test]
    fn xep0004_parse_takes_form_type_out_and_keeps_values() {
        let x = xml("<x xmlns='jabber:x:data' type='submit'>
              <field var='FORM_TYPE'><value>urn:t</value></field>
              <field var='a'><value>1</value><value>2</value></field>
              <field var='b'/></x>");
        let f = Form::parse(&x).unwrap();
        assert_eq!(f.form_type.as_deref(), Some("urn:t"));
        assert_eq!(f.value("a"), Some("1"));
        assert_eq!(f.value("b"), None);
        assert_eq!(f.fields.len(), 2);
    }

    #[test]
    fn xep0004_parse_refuses_too_many_fields() {
        let mut x = Element::new("x", NS_DATA_FORMS);
        for i in 0..=MAX_FIELDS {
            x.push(field(&format!("f{i}"), &["v"]));
        }
        assert!(Form::parse(&x).is_err());
        assert!(Form::parse(&Element::new("y", NS_DATA_FORMS)).is_err());
    }

    #[test]
    fn xep0004_booleans() {
        assert_eq!(boolean("true"), Some(true));
        assert_eq!(boolean("0"), Some(false));
        assert_eq!(boolean("yes"), None);
    }
}
