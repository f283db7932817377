//! `--where 'city = "London" and rate < 60'`: the CLI's readable form of a
//! search filter, turned into the typed `Filter` message (the API itself
//! takes no filter strings). Errors point at the offending token by column.
//!
//! ```text
//! expr  := and ("or" and)*
//! and   := unary ("and" unary)*
//! unary := "not" unary | "(" expr ")" | cond
//! cond  := column ("=" | "!=" | "<" | "<=" | ">" | ">=") value
//!        | column "in" "(" value ("," value)* ")"
//!        | column "is" ["not"] "null"
//! value := "text" | 'text' | number | true | false
//! ```
//!
//! Keywords are case-insensitive; a column that is not a plain word is
//! written in backquotes. Numbers with a `.` or an exponent are doubles.

use lakehouse_proto::vector::v1 as pb;
use pb::filter::Kind;

/// A `--where` the parser cannot read: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--where, at column {column}: {message}")]
pub struct WhereError {
    /// 1-based character column of the offending token.
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Number(String),
    Symbol(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("`{w}`"),
            Token::Quoted(s) => format!("the string {s:?}"),
            Token::Number(n) => format!("the number {n}"),
            Token::Symbol(s) => format!("`{s}`"),
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(word))
    }
}

/// Parses a `--where` expression into a filter.
pub fn parse(text: &str) -> Result<pb::Filter, WhereError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        end: text.chars().count() + 1,
    };
    let filter = parser.or()?;
    if let Some((column, token)) = parser.tokens.get(parser.at) {
        return Err(WhereError {
            column: *column,
            message: format!(
                "expected `and`, `or` or the end, found {}",
                token.describe()
            ),
        });
    }
    Ok(filter)
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, WhereError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(WhereError {
                            column,
                            message: format!("the {c}-quoted text is never closed"),
                        });
                    }
                    Some('\\') if chars.get(i + 1).is_some() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        value.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push((
                column,
                if c == '`' {
                    Token::Word(value)
                } else {
                    Token::Quoted(value)
                },
            ));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        if let Some(symbol) = ["<=", ">=", "!=", "=="].into_iter().find(|s| *s == two) {
            tokens.push((
                column,
                Token::Symbol(if symbol == "==" { "=" } else { symbol }),
            ));
            i += 2;
            continue;
        }
        if let Some(symbol) = ["=", "<", ">", "(", ")", ","]
            .into_iter()
            .find(|s| s.starts_with(c))
        {
            tokens.push((column, Token::Symbol(symbol)));
            i += 1;
            continue;
        }
        let starts_number = c.is_ascii_digit()
            || ((c == '-' || c == '+' || c == '.')
                && chars
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == '.'));
        if starts_number {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            tokens.push((column, Token::Number(chars[start..i].iter().collect())));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
            {
                i += 1;
            }
            tokens.push((column, Token::Word(chars[start..i].iter().collect())));
            continue;
        }
        return Err(WhereError {
            column,
            message: format!("unexpected character {c:?}"),
        });
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn column(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(c, _)| *c)
    }

    fn fail<T>(&self, expected: &str) -> Result<T, WhereError> {
        let found = self
            .peek()
            .map_or_else(|| "the end".to_owned(), Token::describe);
        Err(WhereError {
            column: self.column(),
            message: format!("expected {expected}, found {found}"),
        })
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).map(|(_, t)| t.clone());
        self.at += 1;
        token
    }

    fn or(&mut self) -> Result<pb::Filter, WhereError> {
        let mut list = vec![self.and()?];
        while self.peek().is_some_and(|t| t.keyword("or")) {
            self.at += 1;
            list.push(self.and()?);
        }
        Ok(combine(list, Kind::AnyOf))
    }

    fn and(&mut self) -> Result<pb::Filter, WhereError> {
        let mut list = vec![self.unary()?];
        while self.peek().is_some_and(|t| t.keyword("and")) {
            self.at += 1;
            list.push(self.unary()?);
        }
        Ok(combine(list, Kind::AllOf))
    }

    fn unary(&mut self) -> Result<pb::Filter, WhereError> {
        match self.peek() {
            Some(t) if t.keyword("not") => {
                self.at += 1;
                Ok(not(self.unary()?))
            }
            Some(Token::Symbol("(")) => {
                self.at += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Token::Symbol(")")) {
                    return self.fail("`)`");
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Word(_)) => self.condition(),
            _ => self.fail("a column name, `not` or `(`"),
        }
    }

    fn condition(&mut self) -> Result<pb::Filter, WhereError> {
        let Some(Token::Word(column)) = self.next() else {
            return self.fail("a column name");
        };
        let op_column = self.column();
        match self.next() {
            Some(Token::Symbol("=")) => Ok(equal(column, self.value()?)),
            Some(Token::Symbol("!=")) => Ok(not(equal(column, self.value()?))),
            Some(Token::Symbol(op @ ("<" | "<=" | ">" | ">="))) => {
                let value = Some(self.value()?);
                let mut range = pb::ColumnRange {
                    column,
                    ..Default::default()
                };
                match op {
                    "<" => range.lt = value,
                    "<=" => range.lte = value,
                    ">" => range.gt = value,
                    _ => range.gte = value,
                }
                Ok(filter(Kind::Range(range)))
            }
            Some(t) if t.keyword("in") => {
                if self.next() != Some(Token::Symbol("(")) {
                    self.at -= 1;
                    return self.fail("`(` after `in`");
                }
                let mut values = vec![self.value()?];
                while self.peek() == Some(&Token::Symbol(",")) {
                    self.at += 1;
                    values.push(self.value()?);
                }
                if self.next() != Some(Token::Symbol(")")) {
                    self.at -= 1;
                    return self.fail("`,` or `)`");
                }
                Ok(filter(Kind::InList(pb::ColumnIn { column, values })))
            }
            Some(t) if t.keyword("is") => {
                let negated = self.peek().is_some_and(|t| t.keyword("not"));
                if negated {
                    self.at += 1;
                }
                if !self.peek().is_some_and(|t| t.keyword("null")) {
                    return self.fail("`null` (or `not null`) after `is`");
                }
                self.at += 1;
                let is_null = filter(Kind::IsNull(pb::ColumnIsNull { column }));
                Ok(if negated { not(is_null) } else { is_null })
            }
            _ => {
                self.at -= 1;
                let _ = op_column;
                self.fail("an operator (=, !=, <, <=, >, >=, in, is null)")
            }
        }
    }

    fn value(&mut self) -> Result<pb::FilterValue, WhereError> {
        use pb::filter_value::Kind as V;
        let kind = match self.peek() {
            Some(Token::Quoted(s)) => V::StringValue(s.clone()),
            Some(Token::Number(n)) => {
                if let Ok(i) = n.parse::<i64>() {
                    V::Int64Value(i)
                } else if let Ok(d) = n.parse::<f64>() {
                    V::DoubleValue(d)
                } else {
                    return self.fail("a number");
                }
            }
            Some(t) if t.keyword("true") => V::BoolValue(true),
            Some(t) if t.keyword("false") => V::BoolValue(false),
            _ => return self.fail("a value (\"text\", a number, true or false)"),
        };
        self.at += 1;
        Ok(pb::FilterValue { kind: Some(kind) })
    }
}

fn filter(kind: Kind) -> pb::Filter {
    pb::Filter { kind: Some(kind) }
}

fn equal(column: String, value: pb::FilterValue) -> pb::Filter {
    filter(Kind::Equal(pb::ColumnEquals {
        column,
        value: Some(value),
    }))
}

fn not(inner: pb::Filter) -> pb::Filter {
    filter(Kind::NoneOf(pb::FilterList {
        filters: vec![inner],
    }))
}

fn combine(mut list: Vec<pb::Filter>, kind: fn(pb::FilterList) -> Kind) -> pb::Filter {
    if list.len() == 1 {
        return list.remove(0);
    }
    filter(kind(pb::FilterList { filters: list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> pb::FilterValue {
        pb::FilterValue {
            kind: Some(pb::filter_value::Kind::StringValue(v.into())),
        }
    }

    fn i(v: i64) -> pb::FilterValue {
        pb::FilterValue {
            kind: Some(pb::filter_value::Kind::Int64Value(v)),
        }
    }

    #[test]
    fn reads_the_readme_example() {
        let parsed = parse(r#"city = "London" and rate < 60"#).expect("parses");
        let expected = filter(Kind::AllOf(pb::FilterList {
            filters: vec![
                equal("city".into(), s("London")),
                filter(Kind::Range(pb::ColumnRange {
                    column: "rate".into(),
                    lt: Some(i(60)),
                    ..Default::default()
                })),
            ],
        }));
        assert_eq!(parsed, expected);
    }

    #[test]
    fn precedence_not_in_is_null_and_quotes() {
        // `and` binds tighter than `or`.
        let parsed = parse("a = 1 or b = 2 and c = 3").expect("parses");
        let Some(Kind::AnyOf(list)) = parsed.kind else {
            panic!("or at the top: {parsed:?}");
        };
        assert!(matches!(list.filters[1].kind, Some(Kind::AllOf(_))));
        let parsed =
            parse("NOT (`odd col` IN ('x', \"y\", 2.5)) OR d IS NOT NULL").expect("parses");
        let Some(Kind::AnyOf(list)) = parsed.kind else {
            panic!("{parsed:?}");
        };
        let Some(Kind::NoneOf(inner)) = &list.filters[0].kind else {
            panic!("not");
        };
        let Some(Kind::InList(in_list)) = &inner.filters[0].kind else {
            panic!("in");
        };
        assert_eq!(in_list.column, "odd col");
        assert_eq!(in_list.values.len(), 3);
        assert!(matches!(list.filters[1].kind, Some(Kind::NoneOf(_))));
        assert!(parse("flag = true and x >= -1e3 and d != 'it\\'s'").is_ok());
    }

    #[test]
    fn errors_point_at_the_token() {
        let error = parse("city = and rate < 60").expect_err("no value");
        assert_eq!(error.column, 8, "{error}");
        assert!(error.message.contains("expected a value"), "{error}");
        let error = parse("rate << 60").expect_err("bad operator");
        assert_eq!(error.column, 7, "{error}");
        let error = parse("city = \"London").expect_err("unclosed");
        assert_eq!(error.column, 8, "{error}");
        let error = parse("(a = 1").expect_err("unclosed paren");
        assert!(
            error.message.contains("`)`") && error.column == 7,
            "{error}"
        );
        let error = parse("a = 1 b = 2").expect_err("missing and");
        assert_eq!(error.column, 7, "{error}");
        assert!(parse("").is_err());
    }
}
