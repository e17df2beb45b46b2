//! Whether a client wants the annotated image instead of JSON: `?render=jpeg`
//! (or `png`), or an `Accept` header that prefers `image/jpeg` / `image/png`.

use hyper::header::ACCEPT;
use hyper::Request;

use crate::http::ServeError;
use crate::chain::Render;

pub fn wanted<B>(req: &Request<B>, renders: bool) -> Result<Option<Render>, ServeError> {
    let query = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes());
    if let Some((_, value)) = query.into_iter().find(|(k, _)| k == "render") {
        let Some(format) = Render::parse(&value) else {
            return Err(ServeError::BadRequest { code: "bad_param", message: format!("render = '{value}': use jpeg or png") });
        };
        if !renders {
            return Err(ServeError::BadRequest { code: "bad_param", message: "this route does not render images".into() });
        }
        return Ok(Some(format));
    }
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    match preferred(accept) {
        Preferred::Image(format) if renders => Ok(Some(format)),
        Preferred::Image(_) => Err(ServeError::NotAcceptable("this route answers application/json only".into())),
        Preferred::Json => Ok(None),
    }
}

enum Preferred {
    Json,
    Image(Render),
}

/// The best of JSON, JPEG and PNG by the header's q-values; JSON on ties,
/// wildcards and an empty header.
fn preferred(accept: &str) -> Preferred {
    let mut best = (Preferred::Json, -1.0f32);
    let mut json_q = if accept.trim().is_empty() { 1.0 } else { 0.0 };
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts.filter_map(|p| p.strip_prefix("q=")).filter_map(|v| v.parse::<f32>().ok()).next().unwrap_or(1.0);
        match media.as_str() {
            "application/json" | "application/*" | "*/*" => json_q = f32::max(json_q, q),
            "image/jpeg" if q > best.1 => best = (Preferred::Image(Render::Jpeg), q),
            "image/png" if q > best.1 => best = (Preferred::Image(Render::Png), q),
            _ => {}
        }
    }
    match best {
        (image @ Preferred::Image(_), q) if q > 0.0 && q > json_q => image,
        _ => Preferred::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, accept: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(a) = accept {
            b = b.header(ACCEPT, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_query_and_the_accept_header_choose_the_format() {
        assert_eq!(wanted(&req("/d?render=jpeg", None), true).unwrap(), Some(Render::Jpeg));
        assert_eq!(wanted(&req("/d?render=PNG", None), true).unwrap(), Some(Render::Png));
        assert_eq!(wanted(&req("/d", Some("image/png")), true).unwrap(), Some(Render::Png));
        assert_eq!(wanted(&req("/d", Some("image/jpeg, application/json;q=0.5")), true).unwrap(), Some(Render::Jpeg));
        // Browsers and curl send wildcards: they get JSON.
        assert_eq!(wanted(&req("/d", Some("*/*")), true).unwrap(), None);
        assert_eq!(wanted(&req("/d", Some("text/html,image/webp,image/png;q=0.8,*/*;q=0.8")), true).unwrap(), None);
        assert_eq!(wanted(&req("/d", None), true).unwrap(), None);
        assert_eq!(wanted(&req("/d", Some("application/json, image/png")), true).unwrap(), None);
    }

    #[test]
    fn routes_without_a_render_stage_refuse_images() {
        assert!(matches!(wanted(&req("/d?render=jpeg", None), false), Err(ServeError::BadRequest { .. })));
        assert!(matches!(wanted(&req("/d", Some("image/jpeg")), false), Err(ServeError::NotAcceptable(_))));
        assert!(matches!(wanted(&req("/d?render=gif", None), true), Err(ServeError::BadRequest { .. })));
        assert_eq!(wanted(&req("/d", Some("image/jpeg;q=0.1, */*")), false).unwrap(), None);
    }
}
