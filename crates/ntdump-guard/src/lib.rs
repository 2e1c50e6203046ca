//! `#[guarded]`: wrap a PyO3 entry point so that no Rust panic reaches Python as
//! `pyo3_runtime.PanicException` (a `BaseException` that `except Exception` misses).
//!
//! The body runs inside `std::panic::catch_unwind`; a panic becomes the error that
//! `crate::guard::panicked(name, payload)` builds (the bindings raise `ntdump.errors.InternalError`).
//! `#[guarded(dump)]` / `#[guarded(self)]` also call `crate::guard::Intact::intact` on it after the body (its error wins over the body's result),
//! so a call that read pages of a file shrunk under its map reports that instead of answering.
//! Functions returning `PyResult<T>`, `Result<T, E>` or `CoreResult<T>` keep their error; any other
//! return type `T` becomes `PyResult<T>`.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, GenericArgument, ItemFn, PathArguments, ReturnType, Type};

/// See the crate documentation.
#[proc_macro_attribute]
pub fn guarded(attr: TokenStream, item: TokenStream) -> TokenStream {
    let check: Option<proc_macro2::TokenStream> = if attr.is_empty() {
        None
    } else {
        Some(attr.into())
    };
    let mut f = parse_macro_input!(item as ItemFn);
    let name = f.sig.ident.to_string();
    let body = &f.block;
    let (ret_ty, ok_ty, is_result) = match &f.sig.output {
        ReturnType::Default => (quote!(()), quote!(()), false),
        ReturnType::Type(_, t) => match result_ok_type(t) {
            Some(ok) => (quote!(#t), quote!(#ok), true),
            None => (quote!(#t), quote!(#t), false),
        },
    };
    let to_result = if is_result {
        quote!(r.map_err(::core::convert::Into::<::pyo3::PyErr>::into))
    } else {
        quote!(::core::result::Result::<_, ::pyo3::PyErr>::Ok(r))
    };
    let after = match check {
        Some(c) => quote!({
            use crate::guard::Intact as _;
            (#c).intact()?;
        }),
        None => quote!(),
    };
    let new_body = quote!({
        let __guard_out: ::pyo3::PyResult<#ok_ty> = match ::std::panic::catch_unwind(
            ::std::panic::AssertUnwindSafe(|| -> #ret_ty #body),
        ) {
            ::core::result::Result::Ok(r) => #to_result,
            ::core::result::Result::Err(p) => ::core::result::Result::Err(crate::guard::panicked(#name, p)),
        };
        #after
        __guard_out
    });
    f.sig.output = syn::parse2(quote!(-> ::pyo3::PyResult<#ok_ty>)).expect("return type");
    *f.block = syn::parse2(new_body).expect("body");
    quote!(#f).into()
}

/// `T` when `t` is `PyResult<T>`, `CoreResult<T>` or `Result<T, E>`.
fn result_ok_type(t: &Type) -> Option<Type> {
    let Type::Path(p) = t else { return None };
    let seg = p.path.segments.last()?;
    if !matches!(
        seg.ident.to_string().as_str(),
        "PyResult" | "Result" | "CoreResult"
    ) {
        return None;
    }
    let PathArguments::AngleBracketed(a) = &seg.arguments else {
        return None;
    };
    match a.args.first()? {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}
