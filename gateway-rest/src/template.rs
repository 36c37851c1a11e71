//! google.api.http path templates: `/v1/{name=tenants/*/flags/*}:verb`. Parsed once at start;
//! matching a request path binds each variable to its (percent-decoded) text.
use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// One segment.
    Star,
    /// The rest of the path (only last).
    DoubleStar,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Part(Part),
    /// A field bound to the segments its parts match.
    Variable {
        field: String,
        parts: Vec<Part>,
    },
}

/// A parsed path template.
#[derive(Debug, Clone)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
    verb: Option<String>,
}

impl PathTemplate {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let path = raw
            .strip_prefix('/')
            .ok_or_else(|| format!("template {raw} must start with /"))?;
        // The verb follows the last ':' outside braces.
        let mut depth = 0;
        let mut verb_at = None;
        for (i, c) in path.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(i),
                _ => {}
            }
        }
        let (body, verb) = match verb_at {
            Some(i) => (&path[..i], Some(path[i + 1..].to_owned())),
            None => (path, None),
        };
        let mut segments = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or_else(|| format!("template {raw}: unclosed variable"))?;
                let var = &inner[..end];
                let (field, pattern) = var.split_once('=').unwrap_or((var, "*"));
                let parts = pattern.split('/').map(parse_part).collect::<Vec<_>>();
                segments.push(Segment::Variable {
                    field: field.to_owned(),
                    parts,
                });
                rest = inner[end + 1..]
                    .strip_prefix('/')
                    .unwrap_or(&inner[end + 1..]);
            } else {
                let (seg, tail) = rest.split_once('/').unwrap_or((rest, ""));
                segments.push(Segment::Part(parse_part(seg)));
                rest = tail;
            }
        }
        Ok(PathTemplate {
            raw: raw.to_owned(),
            segments,
            verb,
        })
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Literal parts count first when several templates match one path.
    pub fn specificity(&self) -> usize {
        let literal = |p: &Part| matches!(p, Part::Literal(_)) as usize;
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Part(p) => literal(p) * 2,
                Segment::Variable { parts, .. } => parts.iter().map(literal).sum(),
            })
            .sum::<usize>()
            + usize::from(self.verb.is_some())
    }

    /// The variables bound by `path` (percent-decoded), or `None` when it does not match.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        self.matches_split(&SplitPath::new(path)?)
    }

    /// [`PathTemplate::matches`] for a path split once for every route tried.
    pub fn matches_split(&self, path: &SplitPath<'_>) -> Option<Vec<(String, String)>> {
        if self.verb.as_deref() != path.verb {
            return None;
        }
        let segs = &path.segments;
        let mut bound = Vec::new();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Part(part) => i = match_part(part, segs, i)?,
                Segment::Variable { field, parts } => {
                    let start = i;
                    for part in parts {
                        i = match_part(part, segs, i)?;
                    }
                    let raw = segs[start..i].join("/");
                    bound.push((
                        field.clone(),
                        percent_decode_str(&raw).decode_utf8().ok()?.into_owned(),
                    ));
                }
            }
        }
        (i == segs.len()).then_some(bound)
    }

    /// OpenAPI form: each `*` becomes a parameter named after the literal before it
    /// (`/v1/{name=flags/*}` → `/v1/flags/{flag}`), so clients need not escape slashes.
    pub fn openapi_path(&self) -> (String, Vec<String>) {
        let mut out = String::new();
        let mut params = Vec::new();
        let mut last_literal = String::from("id");
        let push = |p: &Part, out: &mut String, params: &mut Vec<String>, last: &mut String| match p
        {
            Part::Literal(l) => {
                out.push('/');
                out.push_str(l);
                *last = l.clone();
            }
            Part::Star | Part::DoubleStar => {
                let mut name = last.trim_end_matches('s').to_owned();
                if name.is_empty() || params.contains(&name) {
                    name = format!("{name}{}", params.len());
                }
                out.push_str(&format!("/{{{name}}}"));
                params.push(name);
            }
        };
        for s in &self.segments {
            match s {
                Segment::Part(p) => push(p, &mut out, &mut params, &mut last_literal),
                Segment::Variable { field, parts } if parts == &[Part::Star] => {
                    out.push_str(&format!("/{{{field}}}"));
                    params.push(field.clone());
                }
                Segment::Variable { parts, .. } => {
                    for p in parts {
                        push(p, &mut out, &mut params, &mut last_literal);
                    }
                }
            }
        }
        if let Some(v) = &self.verb {
            out.push(':');
            out.push_str(v);
        }
        (out, params)
    }

    /// Fields bound by the path.
    pub fn fields(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Variable { field, .. } => Some(field.clone()),
                Segment::Part(_) => None,
            })
            .collect()
    }
}

fn parse_part(s: &str) -> Part {
    match s {
        "*" => Part::Star,
        "**" => Part::DoubleStar,
        lit => Part::Literal(lit.to_owned()),
    }
}

fn match_part(part: &Part, segs: &[&str], i: usize) -> Option<usize> {
    match part {
        Part::Literal(l) => (segs.get(i)? == l).then_some(i + 1),
        Part::Star => (!segs.get(i)?.is_empty()).then_some(i + 1),
        Part::DoubleStar => (i < segs.len()).then_some(segs.len()),
    }
}

/// A request path split into segments and its trailing `:verb`, once per request.
pub struct SplitPath<'a> {
    segments: Vec<&'a str>,
    verb: Option<&'a str>,
}

impl<'a> SplitPath<'a> {
    /// `None` for a path not starting with `/`.
    pub fn new(path: &'a str) -> Option<Self> {
        let path = path.strip_prefix('/')?;
        let mut segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        // The verb follows the last ':' of the last segment.
        let mut verb = None;
        if let Some(last) = segments.last_mut() {
            if let Some((head, v)) = last.rsplit_once(':') {
                *last = head;
                verb = Some(v);
            }
        }
        Some(SplitPath { segments, verb })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_variables_and_verbs() {
        let t = PathTemplate::parse("/v1/{name=flags/*}").unwrap();
        assert_eq!(
            t.matches("/v1/flags/beta-x"),
            Some(vec![("name".into(), "flags/beta-x".into())])
        );
        assert_eq!(t.matches("/v1/flags"), None);
        assert_eq!(t.matches("/v1/flags/a/b"), None);
        assert_eq!(t.matches("/v1/flags/a:evaluate"), None);
        let v = PathTemplate::parse("/v1/{flag=flags/*}:evaluate").unwrap();
        assert_eq!(
            v.matches("/v1/flags/a:evaluate"),
            Some(vec![("flag".into(), "flags/a".into())])
        );
        assert_eq!(v.matches("/v1/flags/a"), None);
        let c = PathTemplate::parse("/v1/flags:batchEvaluate").unwrap();
        assert_eq!(c.matches("/v1/flags:batchEvaluate"), Some(vec![]));
        let n = PathTemplate::parse("/v1/{parent=tenants/*/clients/*}/things/{id}").unwrap();
        assert_eq!(
            n.matches("/v1/tenants/t%201/clients/c/things/x"),
            Some(vec![
                ("parent".into(), "tenants/t 1/clients/c".into()),
                ("id".into(), "x".into())
            ])
        );
        assert!(
            c.specificity()
                > PathTemplate::parse("/v1/{name=flags/*}")
                    .unwrap()
                    .specificity()
        );
    }

    #[test]
    fn renders_openapi_paths() {
        let t = PathTemplate::parse("/v1/{name=tenants/*/clients/*}:verb").unwrap();
        assert_eq!(
            t.openapi_path(),
            (
                "/v1/tenants/{tenant}/clients/{client}:verb".into(),
                vec!["tenant".into(), "client".into()]
            )
        );
        let t = PathTemplate::parse("/v1/webhooks/{provider}").unwrap();
        assert_eq!(t.openapi_path().0, "/v1/webhooks/{provider}");
    }
}
