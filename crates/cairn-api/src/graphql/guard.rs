//! Query protection that runs before anything is resolved (and before the
//! library's own walks of the document): the document's size (before
//! parsing), then, on the parsed document, its depth, its
//! size with every fragment spread expanded, and the nesting of
//! introspection lists (`fields`, `inputFields`, `interfaces`,
//! `possibleTypes`), whose cycles could otherwise blow a small query up
//! into a huge answer. Each is computed once per fragment, so a "fragment
//! bomb" (fragments spreading others many times) costs time linear in the
//! document. The library's own depth and complexity limits (set to the
//! same values) then run during validation. Errors get codes here too.

use super::errors::request_error;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
    NextValidation,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use async_graphql::{
    Name, Positioned, Request, ServerError, ServerResult, ValidationResult, Variables,
};
use std::collections::HashMap;
use std::sync::Arc;

pub const QUERY_TOO_LARGE: &str = "QUERY_TOO_LARGE";
pub const QUERY_TOO_DEEP: &str = "QUERY_TOO_DEEP";
pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// Most nested introspection lists (as graphql-js's MaxIntrospectionDepthRule).
pub const MAX_INTROSPECTION_NESTING: usize = 3;

#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_query_bytes: usize,
}

pub struct QueryGuard(pub GuardLimits);

impl ExtensionFactory for QueryGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Guard(self.0))
    }
}

struct Guard(GuardLimits);

#[async_graphql::async_trait::async_trait]
impl Extension for Guard {
    /// Runs before the library parses (and walks) the document itself:
    /// its own recursion check follows every fragment spread, which a
    /// fragment bomb makes exponential, so nothing it would reject that
    /// way may reach it.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let limits = self.0;
        let len = request.query.len();
        if len > limits.max_query_bytes {
            return Err(request_error(
                format!(
                    "query: the document is {len} bytes, larger than the limit of {} bytes",
                    limits.max_query_bytes
                ),
                QUERY_TOO_LARGE,
                413,
            ));
        }
        if request.query.trim().is_empty() {
            return Err(request_error("query: is required", PARSE_FAILED, 400));
        }
        let doc = request.parsed_query().map_err(parse_failed)?;
        check(doc, limits)?;
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(parse_failed)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|mut e| {
                    let code = match e.message.as_str() {
                        "Query is too complex." => QUERY_TOO_COMPLEX,
                        "Query is nested too deep." => QUERY_TOO_DEEP,
                        _ => VALIDATION_FAILED,
                    };
                    let mut ext = e.extensions.take().unwrap_or_default();
                    ext.set("code", code);
                    ext.set("status", 400);
                    e.extensions = Some(ext);
                    e
                })
                .collect()
        })
    }
}

fn parse_failed(mut e: ServerError) -> ServerError {
    let mut ext = e.extensions.take().unwrap_or_default();
    // The parser's own nesting limit (it must not recurse without bound)
    // is a depth refusal too.
    let code = if e.message.starts_with("The recursion depth of the query") {
        QUERY_TOO_DEEP
    } else {
        PARSE_FAILED
    };
    ext.set("code", code);
    ext.set("status", 400);
    e.extensions = Some(ext);
    e
}

/// What a selection set amounts to once every spread is expanded.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    depth: usize,
    fields: u64,
    introspection: usize,
}

impl Shape {
    fn merge(&mut self, other: Shape) {
        self.depth = self.depth.max(other.depth);
        self.fields = self.fields.saturating_add(other.fields);
        self.introspection = self.introspection.max(other.introspection);
    }
}

struct Walker<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    done: HashMap<&'a str, Shape>,
    active: Vec<&'a str>,
}

impl<'a> Walker<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Shape {
        let mut shape = Shape::default();
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => {
                    let child = self.set(&f.node.selection_set.node);
                    let counted = matches!(
                        f.node.name.node.as_str(),
                        "fields" | "inputFields" | "interfaces" | "possibleTypes"
                    );
                    shape.merge(Shape {
                        depth: child.depth + 1,
                        fields: child.fields.saturating_add(1),
                        introspection: child.introspection + usize::from(counted),
                    });
                }
                Selection::InlineFragment(f) => {
                    let child = self.set(&f.node.selection_set.node);
                    shape.merge(child);
                }
                Selection::FragmentSpread(s) => {
                    let child = self.fragment(s.node.fragment_name.node.as_str());
                    shape.merge(child);
                }
            }
        }
        shape
    }

    fn fragment(&mut self, name: &'a str) -> Shape {
        if let Some(s) = self.done.get(name) {
            return *s;
        }
        // A cycle (validation reports it) or an unknown fragment counts
        // as nothing here.
        if self.active.contains(&name) {
            return Shape::default();
        }
        let Some((key, def)) = self.fragments.get_key_value(name) else {
            return Shape::default();
        };
        self.active.push(name);
        let shape = self.set(&def.node.selection_set.node);
        self.active.pop();
        self.done.insert(key.as_str(), shape);
        shape
    }
}

fn check(doc: &ExecutableDocument, limits: GuardLimits) -> ServerResult<()> {
    let mut walker = Walker {
        fragments: &doc.fragments,
        done: HashMap::new(),
        active: Vec::new(),
    };
    let mut shape = Shape::default();
    match &doc.operations {
        DocumentOperations::Single(op) => shape.merge(walker.set(&op.node.selection_set.node)),
        DocumentOperations::Multiple(ops) => {
            for op in ops.values() {
                shape.merge(walker.set(&op.node.selection_set.node));
            }
        }
    }
    if shape.depth > limits.max_depth {
        return Err(request_error(
            format!(
                "query: nested {} levels deep, deeper than the limit of {}",
                shape.depth, limits.max_depth
            ),
            QUERY_TOO_DEEP,
            400,
        ));
    }
    if shape.introspection > MAX_INTROSPECTION_NESTING {
        return Err(request_error(
            format!(
                "query: introspection lists nested {} deep, deeper than the limit of {MAX_INTROSPECTION_NESTING}",
                shape.introspection
            ),
            QUERY_TOO_DEEP,
            400,
        ));
    }
    if shape.fields > limits.max_complexity as u64 {
        return Err(request_error(
            format!(
                "query: selects {} fields once fragments are expanded, more than the complexity limit of {}",
                shape.fields, limits.max_complexity
            ),
            QUERY_TOO_COMPLEX,
            400,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(q: &str) -> Shape {
        let doc = async_graphql::parser::parse_query(q).unwrap();
        let mut w = Walker {
            fragments: &doc.fragments,
            done: HashMap::new(),
            active: Vec::new(),
        };
        let mut s = Shape::default();
        if let DocumentOperations::Single(op) = &doc.operations {
            s.merge(w.set(&op.node.selection_set.node));
        }
        s
    }

    #[test]
    fn fragment_bombs_are_measured_without_expanding_them() {
        // Each fragment spreads the next twice: 2^40 fields once expanded.
        let mut q = String::from("query { ...F0 }\n");
        for i in 0..40 {
            q.push_str(&format!(
                "fragment F{i} on Query {{ ...F{} ...F{} }}\n",
                i + 1,
                i + 1
            ));
        }
        q.push_str("fragment F40 on Query { __typename }\n");
        let s = shape(&q);
        assert_eq!(s.fields, 1u64 << 40);
        assert_eq!(s.depth, 1);
    }

    #[test]
    fn depth_and_introspection_nesting() {
        let s = shape("{ a { b { c } } d }");
        assert_eq!((s.depth, s.fields, s.introspection), (3, 4, 0));
        let s = shape(
            "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }",
        );
        assert_eq!(s.introspection, 3);
        let s = shape(
            "{ __schema { types { fields { type { interfaces { fields { type { fields { name } } } } } } } } }",
        );
        assert_eq!(s.introspection, 4);
    }
}
