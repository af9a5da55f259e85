//! The operations: intrinsic (DSP0200 §2.4) and extrinsic methods, over the class
//! repository and the model. Produces the CIM-XML response body for a decoded request.

use crate::auth::{Principal, Role};
use crate::backend::{BackendError, DeviceRef, DiskInfo, NicInfo, PowerAction, VirtBackend, VmChange, VmSpec};
use crate::cim::{CimError, Class, Instance, InstancePath, StatusCode, Value};
use crate::model::{self, Object};
use crate::repository::{Repository, canonical_namespace};
use crate::xml::dom::Limits;
use crate::xml::reader::{self, Call, IMethodCall, MethodCall, MethodTarget, ParamValue, Request};
use crate::xml::writer::{self, ObjectOptions, XmlOut};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pull-operation limits.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_OPERATION_TIMEOUT: Duration = Duration::from_secs(600);
pub const MAX_OPEN_ENUMERATIONS: usize = 256;

/// What an open enumeration returns on each pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PullKind {
    Instances,
    Paths,
}

struct Enumeration {
    kind: PullKind,
    items: std::collections::VecDeque<Object>,
    options: ObjectOptions,
    timeout: Duration,
    expires: Instant,
    namespace: String,
}

/// Objects built for a scope (a namespace, or None for both) from some back-end state.
type CachedModel = (Option<&'static str>, model::Inputs, Arc<Vec<Object>>);

/// The broker's operation engine.
pub struct Broker {
    pub repo: Repository,
    pub backend: Box<dyn VirtBackend>,
    /// The host name written into INSTANCEPATH/NAMESPACEPATH.
    pub host_name: String,
    pub limits: Limits,
    enumerations: Mutex<(u64, HashMap<String, Enumeration>)>,
    /// The objects last built per scope (a namespace, or None for both), with the
    /// back-end state they were built from.
    model_cache: Mutex<Vec<CachedModel>>,
}

fn err(code: StatusCode, d: impl Into<String>) -> CimError {
    CimError::new(code, d)
}

fn bool_param(call: &IMethodCall, name: &str, default: bool) -> Result<bool, CimError> {
    match call.param(name) {
        None | Some(ParamValue::Null) => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| err(StatusCode::InvalidParameter, format!("{name} must be a boolean"))),
    }
}

fn class_param(call: &IMethodCall, name: &str) -> Result<Option<String>, CimError> {
    match call.param(name) {
        None | Some(ParamValue::Null) => Ok(None),
        Some(ParamValue::ClassName(c)) => Ok(Some(c.clone())),
        Some(ParamValue::Value(v)) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
        Some(_) => Err(err(StatusCode::InvalidParameter, format!("{name} must be a class name"))),
    }
}

fn string_param(call: &IMethodCall, name: &str) -> Result<Option<String>, CimError> {
    match call.param(name) {
        None | Some(ParamValue::Null) => Ok(None),
        Some(ParamValue::Value(v)) => Ok(Some(v.clone())),
        Some(_) => Err(err(StatusCode::InvalidParameter, format!("{name} must be a string"))),
    }
}

fn u32_param(call: &IMethodCall, name: &str) -> Result<Option<u32>, CimError> {
    match string_param(call, name)? {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| err(StatusCode::InvalidParameter, format!("{name} must be a uint32"))),
    }
}

fn property_list(call: &IMethodCall) -> Result<Option<Vec<String>>, CimError> {
    match call.param("PropertyList") {
        None | Some(ParamValue::Null) => Ok(None),
        Some(ParamValue::ValueArray(items)) => Ok(Some(items.iter().flatten().cloned().collect())),
        Some(ParamValue::Value(v)) => Ok(Some(vec![v.clone()])),
        Some(_) => Err(err(StatusCode::InvalidParameter, "PropertyList must be a string array")),
    }
}

fn instance_name_param(call: &IMethodCall, name: &str) -> Result<InstancePath, CimError> {
    match call.param(name) {
        Some(ParamValue::InstanceName(p)) | Some(ParamValue::Reference(p)) => Ok(p.clone()),
        Some(ParamValue::ClassName(_)) => Err(err(StatusCode::NotSupported, "class-level operations are not supported")),
        _ => Err(err(StatusCode::InvalidParameter, format!("{name} must be an instance name"))),
    }
}

/// Applies PropertyList (and DeepInheritance=false restriction, as the property
/// names of the requested class) to an instance.
fn filter_instance(inst: &Instance, list: Option<&[String]>, restrict_to: Option<&Class>) -> Instance {
    let mut out = inst.clone();
    out.properties.retain(|p| {
        list.is_none_or(|l| l.iter().any(|n| n.eq_ignore_ascii_case(&p.name)))
            && restrict_to.is_none_or(|c| c.property(&p.name).is_some())
    });
    out
}

fn filter_class(class: &Class, local_only: bool, list: Option<&[String]>) -> Class {
    let mut c = class.clone();
    if local_only {
        c.properties.retain(|p| !p.propagated);
        c.methods.retain(|m| !m.propagated);
    }
    if let Some(l) = list {
        c.properties.retain(|p| l.iter().any(|n| n.eq_ignore_ascii_case(&p.name)));
    }
    c
}

/// The result of a successful intrinsic operation: the IRETURNVALUE content and
/// trailing PARAMVALUEs.
struct IResult {
    ireturn: Option<String>,
    params: String,
}

impl Broker {
    pub fn new(backend: Box<dyn VirtBackend>, host_name: impl Into<String>) -> Result<Broker, String> {
        Ok(Broker {
            repo: Repository::builtin()?,
            backend,
            host_name: host_name.into(),
            limits: Limits::default(),
            enumerations: Mutex::new((1, HashMap::new())),
            model_cache: Mutex::new(Vec::new()),
        })
    }

    /// Handles a decoded request for an authenticated user and returns the response body.
    pub fn handle(&self, req: &Request, who: &Principal) -> String {
        self.handle_with_status(req, who).0
    }

    /// Like [`Broker::handle`], also returning the CIM error the body carries, if any
    /// (for the chunked response's `CIMStatusCode` trailer).
    pub fn handle_with_status(&self, req: &Request, who: &Principal) -> (String, Option<CimError>) {
        let mut status = None;
        let body = match &req.call {
            Call::Intrinsic(call) => {
                let body = match self.intrinsic(call, who) {
                    Ok(r) => {
                        let mut s = match r.ireturn {
                            Some(inner) => writer::ireturnvalue(&inner),
                            None => String::new(),
                        };
                        s.push_str(&r.params);
                        s
                    }
                    Err(e) => {
                        let mut o = XmlOut::with_host(&self.host_name);
                        o.error(&e);
                        status = Some(e);
                        o.buf
                    }
                };
                writer::imethod_response(&req.id, &call.name, &body)
            }
            Call::Extrinsic(call) => {
                let body = match self.extrinsic(call, who) {
                    Ok(b) => b,
                    Err(e) => {
                        let mut o = XmlOut::with_host(&self.host_name);
                        o.error(&e);
                        status = Some(e);
                        o.buf
                    }
                };
                writer::method_response(&req.id, &call.name, &body)
            }
        };
        (body, status)
    }

    /// The objects of one namespace (None: both, for association traversals), rebuilt
    /// only when the back end's state differs from the last build's.
    fn objects(&self, who: &Principal, ns: Option<&'static str>) -> Result<Arc<Vec<Object>>, CimError> {
        let inputs = model::inputs(self.backend.as_ref(), who)?;
        {
            let cache = self.model_cache.lock().map_err(|_| err(StatusCode::Failed, "model cache lock"))?;
            if let Some((_, _, objs)) = cache.iter().find(|(n, i, _)| *n == ns && *i == inputs) {
                return Ok(objs.clone());
            }
        }
        let objs = Arc::new(model::build(&self.repo, &inputs, ns)?);
        let mut cache = self.model_cache.lock().map_err(|_| err(StatusCode::Failed, "model cache lock"))?;
        cache.retain(|(n, _, _)| *n != ns);
        cache.push((ns, inputs, objs.clone()));
        Ok(objs)
    }

    fn namespace<'a>(&'a self, ns: &str) -> Result<(&'static str, &'a crate::repository::NamespaceClasses), CimError> {
        let canon = canonical_namespace(ns)
            .ok_or_else(|| err(StatusCode::InvalidNamespace, format!("namespace {ns} is not served")))?;
        let classes = self
            .repo
            .namespace(canon)
            .ok_or_else(|| err(StatusCode::InvalidNamespace, format!("namespace {ns} is not served")))?;
        Ok((canon, classes))
    }

    fn intrinsic(&self, call: &IMethodCall, who: &Principal) -> Result<IResult, CimError> {
        let (ns, classes) = self.namespace(&call.namespace)?;
        let host = self.host_name.as_str();
        let name = call.name.as_str();
        match name {
            "EnumerateClassNames" | "EnumerateClasses" => {
                let parent = class_param(call, "ClassName")?;
                if let Some(p) = &parent
                    && classes.get(p).is_none()
                {
                    return Err(err(StatusCode::InvalidClass, format!("class {p} does not exist")));
                }
                let deep = bool_param(call, "DeepInheritance", false)?;
                let names = classes.subclass_names(parent.as_deref(), deep);
                let mut o = XmlOut::with_host(&self.host_name);
                if name == "EnumerateClassNames" {
                    for n in names {
                        o.classname(&n);
                    }
                } else {
                    let local_only = bool_param(call, "LocalOnly", true)?;
                    let opts = ObjectOptions {
                        include_qualifiers: bool_param(call, "IncludeQualifiers", true)?,
                        include_class_origin: bool_param(call, "IncludeClassOrigin", false)?,
                    };
                    for n in names {
                        if let Some(c) = classes.get(&n) {
                            o.class(&filter_class(c, local_only, None), &opts);
                        }
                    }
                }
                Ok(IResult { ireturn: Some(o.buf), params: String::new() })
            }
            "GetClass" => {
                let cname = class_param(call, "ClassName")?
                    .ok_or_else(|| err(StatusCode::InvalidParameter, "ClassName is required"))?;
                let c = classes.get(&cname).ok_or_else(|| err(StatusCode::NotFound, format!("class {cname} does not exist")))?;
                let opts = ObjectOptions {
                    include_qualifiers: bool_param(call, "IncludeQualifiers", true)?,
                    include_class_origin: bool_param(call, "IncludeClassOrigin", false)?,
                };
                let local_only = bool_param(call, "LocalOnly", true)?;
                let list = property_list(call)?;
                let mut o = XmlOut::with_host(&self.host_name);
                o.class(&filter_class(c, local_only, list.as_deref()), &opts);
                Ok(IResult { ireturn: Some(o.buf), params: String::new() })
            }
            "EnumerateInstanceNames" | "EnumerateInstances" | "OpenEnumerateInstances" | "OpenEnumerateInstancePaths" => {
                let cname = class_param(call, "ClassName")?
                    .ok_or_else(|| err(StatusCode::InvalidParameter, "ClassName is required"))?;
                let class = classes.get(&cname).ok_or_else(|| err(StatusCode::InvalidClass, format!("class {cname} does not exist")))?;
                let deep = bool_param(call, "DeepInheritance", true)?;
                let opts = ObjectOptions {
                    include_qualifiers: false,
                    include_class_origin: bool_param(call, "IncludeClassOrigin", false)?,
                };
                let list = property_list(call)?;
                let all = self.objects(who, Some(ns))?;
                let objects: Vec<Object> = all
                    .iter()
                    .filter(|o| o.path.namespace.as_deref() == Some(ns) && classes.is_a(&o.instance.class_name, &class.name))
                    .map(|o| {
                        let inst = filter_instance(&o.instance, list.as_deref(), (!deep).then_some(class));
                        Object { path: o.path.clone(), instance: inst }
                    })
                    .collect();
                match name {
                    "EnumerateInstanceNames" => {
                        let mut o = XmlOut::with_host(&self.host_name);
                        for obj in &objects {
                            let mut p = obj.path.clone();
                            p.namespace = None;
                            o.instancename(&p);
                        }
                        Ok(IResult { ireturn: Some(o.buf), params: String::new() })
                    }
                    "EnumerateInstances" => {
                        let mut o = XmlOut::with_host(&self.host_name);
                        for obj in &objects {
                            o.value_namedinstance(&obj.path, &obj.instance, &opts);
                        }
                        Ok(IResult { ireturn: Some(o.buf), params: String::new() })
                    }
                    _ => {
                        let kind = if name == "OpenEnumerateInstances" { PullKind::Instances } else { PullKind::Paths };
                        self.open_enumeration(call, ns, kind, objects, opts)
                    }
                }
            }
            "GetInstance" => {
                let path = instance_name_param(call, "InstanceName")?;
                if classes.get(&path.class_name).is_none() {
                    return Err(err(StatusCode::InvalidClass, format!("class {} does not exist", path.class_name)));
                }
                let list = property_list(call)?;
                let opts = ObjectOptions {
                    include_qualifiers: false,
                    include_class_origin: bool_param(call, "IncludeClassOrigin", false)?,
                };
                let obj = self.find(who, ns, &path)?;
                let mut o = XmlOut::with_host(&self.host_name);
                o.instance(&filter_instance(&obj.instance, list.as_deref(), None), &opts, host);
                Ok(IResult { ireturn: Some(o.buf), params: String::new() })
            }
            "Associators" | "AssociatorNames" | "References" | "ReferenceNames" | "OpenAssociatorInstances"
            | "OpenAssociatorInstancePaths" | "OpenReferenceInstances" | "OpenReferenceInstancePaths" => {
                let param = if name.starts_with("Open") { "InstanceName" } else { "ObjectName" };
                let target = instance_name_param(call, param)?;
                if classes.get(&target.class_name).is_none() {
                    return Err(err(StatusCode::InvalidParameter, format!("class {} does not exist", target.class_name)));
                }
                let assoc_class = class_param(call, "AssocClass")?;
                let result_class = class_param(call, "ResultClass")?;
                let role_f = string_param(call, "Role")?.filter(|s| !s.is_empty());
                let result_role = string_param(call, "ResultRole")?.filter(|s| !s.is_empty());
                let list = property_list(call)?;
                let opts = ObjectOptions {
                    include_qualifiers: false,
                    include_class_origin: bool_param(call, "IncludeClassOrigin", false)?,
                };
                for c in [&assoc_class, &result_class].into_iter().flatten() {
                    if classes.get(c).is_none() {
                        return Err(err(StatusCode::InvalidParameter, format!("class {c} does not exist")));
                    }
                }
                let snapshot = self.objects(who, None)?;
                let mut target = target;
                if target.namespace.is_none() {
                    target.namespace = Some(ns.to_string());
                }
                // The object itself must exist.
                if !snapshot.iter().any(|o| o.path.same_instance(&target)) {
                    return Err(err(StatusCode::NotFound, "the source object does not exist"));
                }
                let is_refs = name.contains("Reference");
                let results = associate(
                    &snapshot,
                    classes,
                    ns,
                    &target,
                    is_refs,
                    assoc_class.as_deref(),
                    result_class.as_deref(),
                    role_f.as_deref(),
                    result_role.as_deref(),
                );
                let results: Vec<Object> = results
                    .into_iter()
                    .map(|o| Object { instance: filter_instance(&o.instance, list.as_deref(), None), path: o.path })
                    .collect();
                if let Some(open) = name.strip_prefix("Open") {
                    let kind = if open.ends_with("Paths") { PullKind::Paths } else { PullKind::Instances };
                    return self.open_enumeration(call, ns, kind, results, opts);
                }
                let mut o = XmlOut::with_host(&self.host_name);
                for obj in &results {
                    if name.ends_with("Names") {
                        o.objectpath(&obj.path, host);
                    } else {
                        o.value_objectwithpath(&obj.path, &obj.instance, &opts, host);
                    }
                }
                Ok(IResult { ireturn: Some(o.buf), params: String::new() })
            }
            "PullInstancesWithPath" | "PullInstancePaths" | "PullInstances" => self.pull(call, ns),
            "CloseEnumeration" => {
                let ctx = string_param(call, "EnumerationContext")?
                    .ok_or_else(|| err(StatusCode::InvalidParameter, "EnumerationContext is required"))?;
                let mut st = self.enumerations.lock().map_err(|_| err(StatusCode::Failed, "lock"))?;
                st.1.remove(&ctx).ok_or_else(|| err(StatusCode::InvalidEnumerationContext, "no such enumeration context"))?;
                Ok(IResult { ireturn: None, params: String::new() })
            }
            "EnumerationCount" => Err(err(StatusCode::NotSupported, "EnumerationCount is not supported")),
            "CreateInstance" | "ModifyInstance" | "DeleteInstance" | "SetProperty" | "CreateClass" | "ModifyClass"
            | "DeleteClass" | "SetQualifier" | "DeleteQualifier" => {
                if who.role == Role::ReadOnly {
                    Err(err(StatusCode::AccessDenied, "read-only users cannot change objects"))
                } else {
                    Err(err(StatusCode::NotSupported, format!("{name} is not supported: use the methods of the DSP1042 service")))
                }
            }
            "ExecQuery" | "OpenQueryInstances" => {
                Err(err(StatusCode::QueryLanguageNotSupported, "no query language is supported"))
            }
            _ => Err(err(StatusCode::NotSupported, format!("operation {name} is not supported"))),
        }
    }

    fn find(&self, who: &Principal, ns: &str, path: &InstancePath) -> Result<Object, CimError> {
        let mut want = path.clone();
        want.namespace = Some(ns.to_string());
        let scope = canonical_namespace(ns);
        self.objects(who, scope)?
            .iter()
            .find(|o| o.path.same_instance(&want))
            .cloned()
            .ok_or_else(|| err(StatusCode::NotFound, "the object does not exist"))
    }

    fn expire_enumerations(map: &mut HashMap<String, Enumeration>) {
        let now = Instant::now();
        map.retain(|_, e| e.expires > now);
    }

    fn open_enumeration(
        &self,
        call: &IMethodCall,
        ns: &str,
        kind: PullKind,
        objects: Vec<Object>,
        options: ObjectOptions,
    ) -> Result<IResult, CimError> {
        if string_param(call, "FilterQuery")?.is_some() || string_param(call, "FilterQueryLanguage")?.is_some() {
            return Err(err(StatusCode::FilteredEnumerationNotSupported, "filtered enumerations are not supported"));
        }
        if bool_param(call, "ContinueOnError", false)? {
            return Err(err(StatusCode::ContinuationOnErrorNotSupported, "ContinueOnError is not supported"));
        }
        let timeout = match u32_param(call, "OperationTimeout")? {
            None => DEFAULT_OPERATION_TIMEOUT,
            Some(0) => return Err(err(StatusCode::InvalidOperationTimeout, "an OperationTimeout of 0 is not supported")),
            Some(s) if u64::from(s) > MAX_OPERATION_TIMEOUT.as_secs() => {
                return Err(err(
                    StatusCode::InvalidOperationTimeout,
                    format!("OperationTimeout is at most {} s", MAX_OPERATION_TIMEOUT.as_secs()),
                ));
            }
            Some(s) => Duration::from_secs(u64::from(s)),
        };
        let max = u32_param(call, "MaxObjectCount")?.unwrap_or(0) as usize;
        let mut e = Enumeration {
            kind,
            items: objects.into(),
            options,
            timeout,
            expires: Instant::now() + timeout,
            namespace: ns.to_string(),
        };
        let batch: Vec<Object> = (0..max.min(e.items.len())).filter_map(|_| e.items.pop_front()).collect();
        let ctx = if e.items.is_empty() {
            None
        } else {
            let mut st = self.enumerations.lock().map_err(|_| err(StatusCode::Failed, "lock"))?;
            Self::expire_enumerations(&mut st.1);
            if st.1.len() >= MAX_OPEN_ENUMERATIONS {
                return Err(err(StatusCode::ServerLimitsExceeded, "too many open enumerations"));
            }
            let id = format!("mantle-enum-{}", st.0);
            st.0 += 1;
            st.1.insert(id.clone(), e);
            Some(id)
        };
        Ok(self.pull_result(kind, &batch, &options, ctx.as_deref()))
    }

    fn pull_result(&self, kind: PullKind, batch: &[Object], opts: &ObjectOptions, ctx: Option<&str>) -> IResult {
        let mut o = XmlOut::with_host(&self.host_name);
        for obj in batch {
            match kind {
                PullKind::Instances => o.value_instancewithpath(&obj.path, &obj.instance, opts, &self.host_name),
                PullKind::Paths => o.instancepath(&obj.path, &self.host_name),
            }
        }
        let mut p = XmlOut::with_host(&self.host_name);
        p.paramvalue("EnumerationContext", "string", &Value::str(ctx.unwrap_or("")), &self.host_name);
        p.paramvalue("EndOfSequence", "boolean", &Value::bool(ctx.is_none()), &self.host_name);
        IResult { ireturn: Some(o.buf), params: p.buf }
    }

    fn pull(&self, call: &IMethodCall, ns: &str) -> Result<IResult, CimError> {
        let ctx = string_param(call, "EnumerationContext")?
            .ok_or_else(|| err(StatusCode::InvalidParameter, "EnumerationContext is required"))?;
        let max = u32_param(call, "MaxObjectCount")?
            .ok_or_else(|| err(StatusCode::InvalidParameter, "MaxObjectCount is required"))? as usize;
        let want = if call.name == "PullInstancePaths" { PullKind::Paths } else { PullKind::Instances };
        let mut st = self.enumerations.lock().map_err(|_| err(StatusCode::Failed, "lock"))?;
        Self::expire_enumerations(&mut st.1);
        let e = st
            .1
            .get_mut(&ctx)
            .ok_or_else(|| err(StatusCode::InvalidEnumerationContext, "no such enumeration context (closed or expired)"))?;
        if e.kind != want || e.namespace != ns {
            return Err(err(StatusCode::InvalidEnumerationContext, "the enumeration context belongs to another operation"));
        }
        let batch: Vec<Object> = (0..max.min(e.items.len())).filter_map(|_| e.items.pop_front()).collect();
        e.expires = Instant::now() + e.timeout;
        let opts = e.options;
        let done = e.items.is_empty();
        if done {
            st.1.remove(&ctx);
        }
        drop(st);
        Ok(self.pull_result(want, &batch, &opts, (!done).then_some(ctx.as_str())))
    }

    /// Number of open enumeration contexts (after expiring old ones).
    pub fn open_enumerations(&self) -> usize {
        match self.enumerations.lock() {
            Ok(mut st) => {
                Self::expire_enumerations(&mut st.1);
                st.1.len()
            }
            Err(_) => 0,
        }
    }

    // ---- extrinsic methods ----

    fn extrinsic(&self, call: &MethodCall, who: &Principal) -> Result<String, CimError> {
        let (ns, classes) = self.namespace(&call.namespace)?;
        let class_name = call.target.class_name();
        let class = classes
            .get(class_name)
            .ok_or_else(|| err(StatusCode::InvalidClass, format!("class {class_name} does not exist")))?;
        let method = class
            .method(&call.name)
            .ok_or_else(|| err(StatusCode::MethodNotFound, format!("{class_name} has no method {}", call.name)))?;
        if who.role == Role::ReadOnly {
            return Err(err(StatusCode::AccessDenied, "read-only users cannot invoke methods"));
        }
        for p in &call.params {
            if method.parameters.iter().all(|d| !d.name.eq_ignore_ascii_case(&p.name)) {
                return Err(err(StatusCode::InvalidParameter, format!("{} has no parameter {}", method.name, p.name)));
            }
        }
        let MethodTarget::Instance(path) = &call.target else {
            return Err(err(StatusCode::NotSupported, format!("{} is not a static method", method.name)));
        };
        let obj = self.find(who, ns, path)?;
        let (code, outs) = match (obj.instance.class_name.as_str(), method.name.as_str()) {
            (model::VM_CLASS, "RequestStateChange") => self.request_state_change(who, &obj, call)?,
            (model::VSMS_CLASS, "DefineSystem") => self.define_system(who, call)?,
            (model::VSMS_CLASS, "DestroySystem") => self.destroy_system(who, call)?,
            (model::VSMS_CLASS, "ModifyResourceSettings") => self.modify_resource_settings(who, call)?,
            (model::VSMS_CLASS, "ModifySystemSettings") => self.modify_system_settings(who, call)?,
            (model::VSMS_CLASS, "AddResourceSettings") => self.add_resource_settings(who, call)?,
            (model::VSMS_CLASS, "RemoveResourceSettings") => self.remove_resource_settings(who, call)?,
            _ => (1, Vec::new()),
        };
        let mut body = writer::returnvalue(method.return_type.as_str(), &code.to_string());
        let mut o = XmlOut::with_host(&self.host_name);
        for (name, ty, v) in outs {
            o.paramvalue(name, ty, &v, &self.host_name);
        }
        body.push_str(&o.buf);
        Ok(body)
    }

    fn scalar_param<'a>(call: &'a MethodCall, name: &str) -> Option<&'a str> {
        call.param(name).and_then(|p| p.value.as_str())
    }

    fn request_state_change(&self, who: &Principal, vm: &Object, call: &MethodCall) -> Result<(u32, Vec<OutParam>), CimError> {
        let requested = Self::scalar_param(call, "RequestedState")
            .ok_or_else(|| err(StatusCode::InvalidParameter, "RequestedState is required"))?;
        let requested: u16 = requested
            .trim()
            .parse()
            .map_err(|_| err(StatusCode::InvalidParameter, "RequestedState must be a uint16"))?;
        let action = match requested {
            2 => PowerAction::PowerOn,
            3 => PowerAction::PowerOff,
            4 => PowerAction::Shutdown,
            9 => PowerAction::Pause,
            10 => PowerAction::Reboot,
            11 => PowerAction::Reset,
            6..=8 => return Ok((1, Vec::new())),
            _ => return Ok((5, Vec::new())),
        };
        let id = vm.path.key_text("Name").ok_or_else(|| err(StatusCode::Failed, "VM without Name"))?;
        Ok(match self.backend.power(who, id, action) {
            Ok(crate::backend::Outcome::Done) => (0, Vec::new()),
            Ok(crate::backend::Outcome::Started(job)) => {
                (4096, vec![("Job", "reference", Value::Reference(model::job_path(&job)))])
            }
            Err(BackendError::InvalidState(_)) => (4097, Vec::new()),
            Err(BackendError::NotFound(_)) => return Err(err(StatusCode::NotFound, "the VM no longer exists")),
            Err(BackendError::AccessDenied(d)) => return Err(err(StatusCode::AccessDenied, d)),
            Err(BackendError::InvalidParameter(_)) => (5, Vec::new()),
            Err(BackendError::Failed(_)) => (4, Vec::new()),
        })
    }

    fn embedded_instances(&self, call: &MethodCall, name: &str) -> Result<Vec<Instance>, CimError> {
        let texts: Vec<String> = match call.param(name).map(|p| &p.value) {
            None | Some(ParamValue::Null) => Vec::new(),
            Some(ParamValue::Value(v)) => vec![v.clone()],
            Some(ParamValue::ValueArray(items)) => items.iter().flatten().cloned().collect(),
            Some(ParamValue::Instance(i)) => return Ok(vec![i.clone()]),
            Some(ParamValue::InstanceArray(v)) => return Ok(v.clone()),
            Some(_) => return Err(err(StatusCode::InvalidParameter, format!("{name} must hold embedded instances"))),
        };
        texts
            .iter()
            .map(|t| {
                reader::decode_embedded_instance(t, &self.limits)
                    .map_err(|e| err(StatusCode::InvalidParameter, format!("{name}: {e}")))
            })
            .collect()
    }

    fn define_system(&self, who: &Principal, call: &MethodCall) -> Result<(u32, Vec<OutParam>), CimError> {
        let vssd = self
            .embedded_instances(call, "SystemSettings")?
            .into_iter()
            .next()
            .ok_or_else(|| err(StatusCode::InvalidParameter, "SystemSettings (an embedded VSSD) is required"))?;
        let mut spec = VmSpec { vcpus: 1, memory_mib: 512, ..VmSpec::default() };
        spec.name = vssd
            .scalar("ElementName")
            .or_else(|| vssd.scalar("VirtualSystemIdentifier"))
            .unwrap_or_default()
            .to_string();
        if let Some(notes) = vssd_notes(&vssd) {
            spec.notes = notes;
        }
        spec.boot.kernel = vssd.scalar("KernelFile").unwrap_or_default().to_string();
        spec.boot.format = vssd.scalar("KernelFormat").unwrap_or_default().to_string();
        spec.boot.cmdline = vssd.scalar("KernelCommandLine").unwrap_or_default().to_string();
        for rasd in self.embedded_instances(call, "ResourceSettings")? {
            if let Err(code) = apply_rasd(&mut spec, &rasd) {
                return Ok((code, Vec::new()));
            }
        }
        match self.backend.define_vm(who, spec) {
            Ok(vm) => Ok((0, vec![("ResultingSystem", "reference", Value::Reference(model::vm_path(&vm.id)))])),
            Err(e) => Ok((backend_code(&e)?, Vec::new())),
        }
    }

    fn destroy_system(&self, who: &Principal, call: &MethodCall) -> Result<(u32, Vec<OutParam>), CimError> {
        let Some(ParamValue::Reference(p)) = call.param("AffectedSystem").map(|p| &p.value) else {
            return Err(err(StatusCode::InvalidParameter, "AffectedSystem (a reference) is required"));
        };
        if !p.class_name.eq_ignore_ascii_case(model::VM_CLASS) && !p.class_name.eq_ignore_ascii_case("CIM_ComputerSystem") {
            return Ok((4, Vec::new()));
        }
        let Some(id) = p.key_text("Name") else { return Ok((4, Vec::new())) };
        match self.backend.destroy_vm(who, id) {
            Ok(()) => Ok((0, Vec::new())),
            Err(e) => Ok((backend_code(&e)?, Vec::new())),
        }
    }

    fn modify_resource_settings(&self, who: &Principal, call: &MethodCall) -> Result<(u32, Vec<OutParam>), CimError> {
        let rasds = self.embedded_instances(call, "ResourceSettings")?;
        if rasds.is_empty() {
            return Err(err(StatusCode::InvalidParameter, "ResourceSettings is required"));
        }
        let mut resulting = Vec::new();
        for rasd in &rasds {
            let Some((vm, Some(res))) = rasd.scalar("InstanceID").and_then(model::parse_setting_id) else {
                return Ok((4, Vec::new()));
            };
            let mut change = VmChange::default();
            match res {
                "proc" => match model::scalar_u64(rasd, "VirtualQuantity").and_then(|v| u32::try_from(v).ok()) {
                    Some(v) => change.vcpus = Some(v),
                    None => return Ok((4, Vec::new())),
                },
                "mem" => match model::quantity_mib(rasd) {
                    Some(v) => change.memory_mib = Some(v),
                    None => return Ok((4, Vec::new())),
                },
                _ => return Ok((1, Vec::new())),
            }
            if let Err(e) = self.backend.modify_vm(who, vm, change) {
                return Ok((backend_code(&e)?, Vec::new()));
            }
            let id = rasd.scalar("InstanceID").unwrap_or_default();
            resulting.push(
                InstancePath::new(model::RASD_CLASS).key_str("InstanceID", id).with_namespace(crate::repository::CIMV2_NS),
            );
        }
        Ok((0, vec![("ResultingResourceSettings", "reference", Value::ReferenceArray(resulting))]))
    }

    fn modify_system_settings(&self, who: &Principal, call: &MethodCall) -> Result<(u32, Vec<OutParam>), CimError> {
        let vssd = self
            .embedded_instances(call, "SystemSettings")?
            .into_iter()
            .next()
            .ok_or_else(|| err(StatusCode::InvalidParameter, "SystemSettings is required"))?;
        let Some((vm, None)) = vssd.scalar("InstanceID").and_then(model::parse_setting_id) else {
            return Ok((4, Vec::new()));
        };
        // Properties left out (or NULL) stay as they are.
        let change = VmChange {
            name: vssd.scalar("ElementName").map(str::to_string),
            notes: vssd_notes(&vssd),
            kernel: vssd.scalar("KernelFile").filter(|k| !k.is_empty()).map(str::to_string),
            kernel_format: vssd.scalar("KernelFormat").filter(|f| !f.is_empty()).map(str::to_string),
            cmdline: vssd.scalar("KernelCommandLine").map(str::to_string),
            ..VmChange::default()
        };
        match self.backend.modify_vm(who, vm, change) {
            Ok(_) => Ok((0, Vec::new())),
            Err(e) => Ok((backend_code(&e)?, Vec::new())),
        }
    }
}

impl Broker {
    fn add_resource_settings(&self, who: &Principal, call: &MethodCall) -> Result<(u32, Vec<OutParam>), CimError> {
        let Some(ParamValue::Reference(conf)) = call.param("AffectedConfiguration").map(|p| &p.value) else {
            return Err(err(StatusCode::InvalidParameter, "AffectedConfiguration (a VSSD reference) is required"));
        };
        let Some((vm, None)) = conf.key_text("InstanceID").and_then(model::parse_setting_id) else {
            return Ok((4, Vec::new()));
        };
        let vm = vm.to_string();
        let before = self
            .backend
            .list_vms(who)
            .map_err(|e| err(StatusCode::Failed, e.to_string()))?
            .into_iter()
            .find(|v| v.id == vm)
            .ok_or_else(|| err(StatusCode::NotFound, "the configuration's VM does not exist"))?;
        let mut spec = VmSpec::default();
        for rasd in self.embedded_instances(call, "ResourceSettings")? {
            let rt = model::scalar_u64(&rasd, "ResourceType");
            if !matches!(rt, Some(10 | 15..=17 | 19 | 31)) {
                return Ok((1, Vec::new()));
            }
            if let Err(code) = apply_rasd(&mut spec, &rasd) {
                return Ok((code, Vec::new()));
            }
        }
        let mut resulting = Vec::new();
        for i in 0..spec.disks.len() {
            resulting.push(setting_path(model::SASD_CLASS, &format!("Mantle:{vm}/disk{}", before.disks.len() + i)));
        }
        for i in 0..spec.nics.len() {
            resulting.push(setting_path(model::RASD_CLASS, &format!("Mantle:{vm}/net{}", before.nics.len() + i)));
        }
        let change = VmChange { add_disks: spec.disks, add_nics: spec.nics, ..VmChange::default() };
        match self.backend.modify_vm(who, &vm, change) {
            Ok(_) => Ok((0, vec![("ResultingResourceSettings", "reference", Value::ReferenceArray(resulting))])),
            Err(e) => Ok((backend_code(&e)?, Vec::new())),
        }
    }

    fn remove_resource_settings(&self, who: &Principal, call: &MethodCall) -> Result<(u32, Vec<OutParam>), CimError> {
        let refs: Vec<InstancePath> = match call.param("ResourceSettings").map(|p| &p.value) {
            Some(ParamValue::ReferenceArray(r)) => r.clone(),
            Some(ParamValue::Reference(r)) => vec![r.clone()],
            _ => return Err(err(StatusCode::InvalidParameter, "ResourceSettings (RASD references) is required")),
        };
        let mut by_vm: Vec<(String, Vec<DeviceRef>)> = Vec::new();
        for r in &refs {
            let Some((vm, Some(res))) = r.key_text("InstanceID").and_then(model::parse_setting_id) else {
                return Ok((4, Vec::new()));
            };
            let dev = if let Some(n) = res.strip_prefix("disk").and_then(|n| n.parse().ok()) {
                DeviceRef::Disk(n)
            } else if let Some(n) = res.strip_prefix("net").and_then(|n| n.parse().ok()) {
                DeviceRef::Nic(n)
            } else {
                // Processor and memory cannot be removed, only changed.
                return Ok((4, Vec::new()));
            };
            match by_vm.iter_mut().find(|(v, _)| v == vm) {
                Some((_, devs)) => devs.push(dev),
                None => by_vm.push((vm.to_string(), vec![dev])),
            }
        }
        for (vm, remove) in by_vm {
            if let Err(e) = self.backend.modify_vm(who, &vm, VmChange { remove, ..VmChange::default() }) {
                return Ok((backend_code(&e)?, Vec::new()));
            }
        }
        Ok((0, Vec::new()))
    }
}

/// A VSSD's Notes as one text (None when the property is absent or NULL).
fn vssd_notes(vssd: &Instance) -> Option<String> {
    match vssd.property("Notes").and_then(|p| p.value.as_ref()) {
        Some(Value::Array(notes)) => Some(notes.iter().flatten().cloned().collect::<Vec<_>>().join("\n")),
        Some(Value::Scalar(n)) => Some(n.clone()),
        _ => None,
    }
}

fn setting_path(class: &str, id: &str) -> InstancePath {
    InstancePath::new(class).key_str("InstanceID", id).with_namespace(crate::repository::CIMV2_NS)
}

type OutParam = (&'static str, &'static str, Value);

/// DSP1042 method return code for a back-end error (or a CIM error for access).
fn backend_code(e: &BackendError) -> Result<u32, CimError> {
    match e {
        BackendError::InvalidParameter(_) | BackendError::NotFound(_) => Ok(4),
        BackendError::InvalidState(_) | BackendError::Failed(_) => Ok(2),
        BackendError::AccessDenied(d) => Err(err(StatusCode::AccessDenied, d.clone())),
    }
}

/// Applies one embedded RASD of DefineSystem to the spec; Err is a return code.
fn apply_rasd(spec: &mut VmSpec, rasd: &Instance) -> Result<(), u32> {
    let rt = model::scalar_u64(rasd, "ResourceType").ok_or(4u32)?;
    match rt {
        3 => spec.vcpus = model::scalar_u64(rasd, "VirtualQuantity").and_then(|v| u32::try_from(v).ok()).ok_or(4u32)?,
        4 => spec.memory_mib = model::quantity_mib(rasd).ok_or(4u32)?,
        15..=17 | 19 | 31 => {
            let path = match rasd.property("HostResource").and_then(|p| p.value.as_ref()) {
                Some(Value::Array(items)) => items.iter().flatten().next().cloned(),
                Some(Value::Scalar(s)) => Some(s.clone()),
                _ => None,
            }
            .ok_or(4u32)?;
            spec.disks.push(DiskInfo { path, capacity_mib: model::quantity_mib(rasd).unwrap_or(0) });
        }
        10 => spec.nics.push(NicInfo {
            mac: rasd.scalar("Address").unwrap_or_default().to_string(),
            network: match rasd.property("Connection").and_then(|p| p.value.as_ref()) {
                Some(Value::Array(items)) => items.iter().flatten().next().cloned().unwrap_or_default(),
                _ => String::new(),
            },
        }),
        _ => return Err(1),
    }
    Ok(())
}

/// The association traversal behind Associators/References (and their Names and
/// Open forms): every association instance in the namespace that refers to
/// `target`, filtered by AssocClass/ResultClass/Role/ResultRole.
#[allow(clippy::too_many_arguments)]
fn associate(
    snapshot: &[Object],
    classes: &crate::repository::NamespaceClasses,
    ns: &str,
    target: &InstancePath,
    references: bool,
    assoc_class: Option<&str>,
    result_class: Option<&str>,
    role: Option<&str>,
    result_role: Option<&str>,
) -> Vec<Object> {
    let mut out: Vec<Object> = Vec::new();
    for a in snapshot.iter().filter(|o| o.path.namespace.as_deref() == Some(ns)) {
        let Some(aclass) = classes.get(&a.instance.class_name) else { continue };
        if !aclass.is_association() {
            continue;
        }
        let refs: Vec<(&str, &InstancePath)> = a
            .instance
            .properties
            .iter()
            .filter_map(|p| match &p.value {
                Some(Value::Reference(r)) => Some((p.name.as_str(), r)),
                _ => None,
            })
            .collect();
        let Some((src_role, _)) = refs
            .iter()
            .find(|(n, r)| r.same_instance(target) && role.is_none_or(|ro| ro.eq_ignore_ascii_case(n)))
        else {
            continue;
        };
        if references {
            // For References, ResultClass filters the association class.
            if assoc_class.is_some_and(|c| !classes.is_a(&aclass.name, c))
                || result_class.is_some_and(|c| !classes.is_a(&aclass.name, c))
            {
                continue;
            }
            if !out.iter().any(|o| o.path.same_instance(&a.path)) {
                out.push(a.clone());
            }
            continue;
        }
        if assoc_class.is_some_and(|c| !classes.is_a(&aclass.name, c)) {
            continue;
        }
        for (rname, rpath) in &refs {
            if rname == src_role || result_role.is_some_and(|rr| !rr.eq_ignore_ascii_case(rname)) {
                continue;
            }
            let Some(other) = snapshot.iter().find(|o| o.path.same_instance(rpath)) else { continue };
            if result_class.is_some_and(|c| !classes.is_a(&other.instance.class_name, c) && classes.get(&other.instance.class_name).is_some()) {
                continue;
            }
            if result_class.is_some() && classes.get(&other.instance.class_name).is_none() {
                // Cross-namespace objects whose class this namespace lacks: keep only unfiltered.
                continue;
            }
            if !out.iter().any(|o| o.path.same_instance(&other.path)) {
                out.push(other.clone());
            }
        }
    }
    out
}
