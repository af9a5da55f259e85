//! The class repository: the served subset of the DMTF CIM schema 2.41 plus the
//! Mantle_ subclasses, resolved (inherited properties and methods carry their class
//! origin), per namespace.

use crate::cim::{Class, Method, Property, Qualifier};
use std::collections::HashMap;

const CIM_SUBSET: &str = include_str!("../schema/cim241-subset.mof");
const MANTLE: &str = include_str!("../schema/mantle.mof");

/// The interop namespace and the implementation namespace.
pub const INTEROP_NS: &str = "root/interop";
pub const CIMV2_NS: &str = "root/cimv2";

/// Classes that live only in the interop namespace.
const INTEROP_ONLY: &[&str] = &[
    "CIM_WBEMService",
    "CIM_ObjectManager",
    "CIM_Namespace",
    "CIM_RegisteredSpecification",
    "CIM_RegisteredProfile",
    "CIM_ReferencedProfile",
];

/// Classes of the implementation namespace that are not in interop.
fn in_interop(name: &str) -> bool {
    INTEROP_ONLY.contains(&name)
        || matches!(
            name,
            "CIM_ManagedElement"
                | "CIM_ManagedSystemElement"
                | "CIM_LogicalElement"
                | "CIM_EnabledLogicalElement"
                | "CIM_Service"
                | "CIM_System"
                | "CIM_ComputerSystem"
                | "CIM_Dependency"
                | "CIM_ElementConformsToProfile"
                | "CIM_Job"
                | "CIM_ConcreteJob"
        )
}

/// All the classes of one namespace, resolved.
#[derive(Debug, Default)]
pub struct NamespaceClasses {
    /// Declaration order (superclasses before subclasses).
    pub order: Vec<String>,
    resolved: HashMap<String, Class>,
}

impl NamespaceClasses {
    pub fn get(&self, name: &str) -> Option<&Class> {
        self.resolved.get(&name.to_ascii_lowercase())
    }

    pub fn all(&self) -> impl Iterator<Item = &Class> {
        self.order.iter().filter_map(|n| self.get(n))
    }

    /// True when `sub` is `sup` or one of its subclasses.
    pub fn is_a(&self, sub: &str, sup: &str) -> bool {
        let mut cur = Some(sub.to_string());
        let mut guard = 0;
        while let Some(c) = cur {
            if c.eq_ignore_ascii_case(sup) {
                return true;
            }
            guard += 1;
            if guard > 64 {
                return false;
            }
            cur = self.get(&c).and_then(|k| k.superclass.clone());
        }
        false
    }

    /// Subclass names of `parent` (None: the root classes), direct or all.
    pub fn subclass_names(&self, parent: Option<&str>, deep: bool) -> Vec<String> {
        self.all()
            .filter(|c| match parent {
                None => deep || c.superclass.is_none(),
                Some(p) => {
                    if deep {
                        !c.name.eq_ignore_ascii_case(p) && self.is_a(&c.name, p)
                    } else {
                        c.superclass.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(p))
                    }
                }
            })
            .map(|c| c.name.clone())
            .collect()
    }
}

/// The repository: namespaces and their classes.
#[derive(Debug)]
pub struct Repository {
    namespaces: Vec<(String, NamespaceClasses)>,
}

fn merge_qualifiers(own: &[Qualifier], inherited: &[Qualifier]) -> Vec<Qualifier> {
    let mut out = own.to_vec();
    for q in inherited {
        // Restricted qualifiers do not propagate (DSP0004 flavors).
        if matches!(q.name.to_ascii_lowercase().as_str(), "abstract" | "override" | "version" | "deprecated") {
            continue;
        }
        if !out.iter().any(|o| o.name.eq_ignore_ascii_case(&q.name)) {
            out.push(q.clone());
        }
    }
    out
}

fn resolve(decl: &Class, parent: Option<&Class>) -> Class {
    let mut properties: Vec<Property> = Vec::new();
    let mut methods: Vec<Method> = Vec::new();
    if let Some(p) = parent {
        for prop in &p.properties {
            let mut prop = prop.clone();
            prop.propagated = true;
            properties.push(prop);
        }
        for m in &p.methods {
            let mut m = m.clone();
            m.propagated = true;
            methods.push(m);
        }
    }
    for prop in &decl.properties {
        let mut prop = prop.clone();
        prop.class_origin = Some(decl.name.clone());
        if let Some(existing) = properties.iter_mut().find(|p| p.name.eq_ignore_ascii_case(&prop.name)) {
            prop.qualifiers = merge_qualifiers(&prop.qualifiers, &existing.qualifiers);
            if prop.value.is_none() {
                prop.value = existing.value.clone();
            }
            if prop.embedded_object.is_none() {
                prop.embedded_object = existing.embedded_object.clone();
            }
            *existing = prop;
        } else {
            properties.push(prop);
        }
    }
    for m in &decl.methods {
        let mut m = m.clone();
        m.class_origin = Some(decl.name.clone());
        if let Some(existing) = methods.iter_mut().find(|x| x.name.eq_ignore_ascii_case(&m.name)) {
            *existing = m;
        } else {
            methods.push(m);
        }
    }
    let mut qualifiers = decl.qualifiers.clone();
    if let Some(p) = parent
        && let Some(a) = p.qualifier("Association")
        && decl.qualifier("Association").is_none()
    {
        qualifiers.push(a.clone());
    }
    Class { name: decl.name.clone(), superclass: decl.superclass.clone(), qualifiers, properties, methods }
}

impl Repository {
    /// Builds the repository from the bundled MOF data.
    pub fn builtin() -> Result<Repository, String> {
        let mut decls = crate::mof::parse_classes(CIM_SUBSET)?;
        decls.extend(crate::mof::parse_classes(MANTLE)?);
        let mut namespaces = Vec::new();
        for ns in [INTEROP_NS, CIMV2_NS] {
            let mut nc = NamespaceClasses::default();
            for d in &decls {
                let wanted = if ns == INTEROP_NS { in_interop(&d.name) } else { !INTEROP_ONLY.contains(&d.name.as_str()) };
                if !wanted {
                    continue;
                }
                let parent = match &d.superclass {
                    Some(s) => Some(
                        nc.get(s)
                            .ok_or_else(|| format!("{}: superclass {s} not declared before it in {ns}", d.name))?
                            .clone(),
                    ),
                    None => None,
                };
                let c = resolve(d, parent.as_ref());
                nc.order.push(c.name.clone());
                nc.resolved.insert(c.name.to_ascii_lowercase(), c);
            }
            namespaces.push((ns.to_string(), nc));
        }
        Ok(Repository { namespaces })
    }

    /// The classes of a namespace.
    pub fn namespace(&self, ns: &str) -> Option<&NamespaceClasses> {
        let ns = canonical_namespace(ns)?;
        self.namespaces.iter().find(|(n, _)| n == ns).map(|(_, c)| c)
    }

    pub fn namespace_names(&self) -> impl Iterator<Item = &str> {
        self.namespaces.iter().map(|(n, _)| n.as_str())
    }
}

/// Maps a requested namespace to the served one, or None if not served. There is
/// no `interop` alias: pywbem probes `interop` first and warns when the namespace it
/// finds is not among the CIM_Namespace instances.
pub fn canonical_namespace(ns: &str) -> Option<&'static str> {
    let n = ns.trim_matches('/').to_ascii_lowercase();
    match n.as_str() {
        "root/interop" => Some(INTEROP_NS),
        "root/cimv2" => Some(CIMV2_NS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schema_resolves_inheritance() {
        let repo = Repository::builtin().unwrap();
        let cim = repo.namespace("root/cimv2").unwrap();
        let cs = cim.get("Mantle_ComputerSystem").unwrap();
        let name = cs.property("Name").unwrap();
        assert!(name.is_key());
        assert_eq!(name.class_origin.as_deref(), Some("CIM_System"));
        let es = cs.property("EnabledState").unwrap();
        assert_eq!(es.class_origin.as_deref(), Some("CIM_EnabledLogicalElement"));
        assert!(es.qualifier("ValueMap").is_some());
        let rsc = cs.method("RequestStateChange").unwrap();
        assert_eq!(rsc.parameters.len(), 3);
        let vsms = cim.get("Mantle_VirtualSystemManagementService").unwrap();
        let define = vsms.method("DefineSystem").unwrap();
        assert_eq!(define.parameters[0].qualifier("EmbeddedInstance").unwrap().value_str(), Some("CIM_VirtualSystemSettingData"));
        assert!(cim.is_a("Mantle_ComputerSystem", "CIM_ManagedElement"));
        assert!(cim.get("CIM_HostedService").unwrap().is_association());
        assert!(cim.get("CIM_RegisteredProfile").is_none());
        let interop = repo.namespace("root/interop").unwrap();
        assert!(repo.namespace("interop").is_none());
        assert!(interop.get("CIM_RegisteredProfile").unwrap().property("RegisteredName").is_some());
        assert!(interop.get("CIM_VirtualSystemManagementService").is_none());
        // Keys of an overriding property keep the Key qualifier.
        let ns = interop.get("CIM_Namespace").unwrap();
        assert_eq!(ns.properties.iter().filter(|p| p.is_key()).count(), 6);
        let sd = cim.get("Mantle_VirtualSystemSettingData").unwrap();
        assert!(sd.property("InstanceID").unwrap().is_key());
    }

    #[test]
    fn subclass_listing() {
        let repo = Repository::builtin().unwrap();
        let cim = repo.namespace("root/cimv2").unwrap();
        let direct = cim.subclass_names(Some("CIM_ComputerSystem"), false);
        assert_eq!(direct, vec!["Mantle_HostSystem".to_string(), "Mantle_ComputerSystem".to_string()]);
        let roots = cim.subclass_names(None, false);
        assert!(roots.contains(&"CIM_ManagedElement".to_string()));
        assert!(!roots.contains(&"CIM_System".to_string()));
    }
}
