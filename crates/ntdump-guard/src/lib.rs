//! `#[guarded]`: the one attribute of a Python entry point. On a function it is PyO3's `#[pyfunction]`,
//! on an `impl` block `#[pymethods]` (every method of it), and each body is guarded, so no entry point
//! can miss the guard:
//!
//! * The body runs inside `std::panic::catch_unwind`; a panic becomes the error that
//!   `crate::guard::panicked(name, payload)` builds (the bindings raise `ntdump.errors.InternalError`),
//!   never `pyo3_runtime.PanicException` (a `BaseException` that `except Exception` misses).
//! * After the body, `crate::guard::intact` checks the dump that the call read: `dump.inner` when the
//!   function has an argument named `dump`, else for methods the expression given as
//!   `#[guarded(self.inner)]` (its error wins over the body's result), so a call that read pages of a
//!   file shrunk under its map reports that instead of answering.
//!
//! Functions returning `PyResult<T>` or `Result<T, E>` keep their error; any other return type `T`
//! becomes `PyResult<T>`.

use proc_macro::TokenStream;
use quote::quote;
use syn::{
    parse_macro_input, Block, FnArg, GenericArgument, ImplItem, Item, Pat, PathArguments,
    ReturnType, Signature, Type,
};

/// See the crate documentation.
#[proc_macro_attribute]
pub fn guarded(attr: TokenStream, item: TokenStream) -> TokenStream {
    let on_self: Option<proc_macro2::TokenStream> = (!attr.is_empty()).then(|| attr.into());
    match parse_macro_input!(item as Item) {
        Item::Fn(mut f) => {
            wrap(&mut f.sig, &mut f.block, None);
            quote!(#[::pyo3::pyfunction] #f).into()
        }
        Item::Impl(mut i) => {
            for it in &mut i.items {
                if let ImplItem::Fn(f) = it {
                    wrap(&mut f.sig, &mut f.block, on_self.as_ref());
                }
            }
            quote!(#[::pyo3::pymethods] #i).into()
        }
        other => syn::Error::new_spanned(other, "#[guarded] goes on a fn or an impl block")
            .to_compile_error()
            .into(),
    }
}

/// Rewrite one function: catch panics, check the dump afterwards, return `PyResult`.
fn wrap(sig: &mut Signature, block: &mut Block, on_self: Option<&proc_macro2::TokenStream>) {
    let name = sig.ident.to_string();
    let has_dump = sig.inputs.iter().any(
        |a| matches!(a, FnArg::Typed(t) if matches!(&*t.pat, Pat::Ident(p) if p.ident == "dump")),
    );
    let has_self = matches!(sig.inputs.first(), Some(FnArg::Receiver(_)));
    let check = match (has_dump, has_self, on_self) {
        (true, _, _) => Some(quote!(dump.inner)),
        (false, true, Some(c)) => Some(c.clone()),
        _ => None,
    };
    let (ret_ty, ok_ty, is_result) = match &sig.output {
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
    let after = check.map(|c| quote!(crate::guard::intact(&#c)?;));
    let body = &*block;
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
    sig.output = syn::parse2(quote!(-> ::pyo3::PyResult<#ok_ty>)).expect("return type");
    *block = syn::parse2(new_body).expect("body");
}

/// `T` when `t` is `PyResult<T>` or `Result<T, E>`.
fn result_ok_type(t: &Type) -> Option<Type> {
    let Type::Path(p) = t else { return None };
    let seg = p.path.segments.last()?;
    if !matches!(seg.ident.to_string().as_str(), "PyResult" | "Result") {
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
