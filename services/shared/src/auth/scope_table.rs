//! The one table of which scope each RPC needs. A test reads every `.proto`
//! under `proto/lakehouse` at test time and fails when an RPC is missing
//! here, so a new RPC cannot ship without a decision. At run time an RPC
//! missing from the table needs `admin`: a forgotten entry fails closed.

use super::Scope;
use super::Scope::{Admin, Read, Trials, Write};

/// Full gRPC method path → the scope it needs.
pub const SCOPE_TABLE: &[(&str, Scope)] = &[
    // Storage: reads are read; uploads and error reports (which every
    // service sends) are write; deleting bytes and rewriting the journal
    // are admin.
    ("/lakehouse.storage.v1.StorageService/ListBuckets", Read),
    ("/lakehouse.storage.v1.StorageService/GetBucketHealth", Read),
    ("/lakehouse.storage.v1.StorageService/PutObject", Write),
    ("/lakehouse.storage.v1.StorageService/GetObject", Read),
    ("/lakehouse.storage.v1.StorageService/HeadObject", Read),
    ("/lakehouse.storage.v1.StorageService/ListObjects", Read),
    ("/lakehouse.storage.v1.StorageService/DeleteObject", Admin),
    ("/lakehouse.storage.v1.StorageService/ReportError", Write),
    ("/lakehouse.storage.v1.StorageService/ListErrors", Read),
    ("/lakehouse.storage.v1.StorageService/FlushErrors", Write),
    ("/lakehouse.storage.v1.StorageService/CompactErrors", Admin),
    // Catalog: resync repairs a manifest from the files that exist, which
    // is a commit like any other (write); dropping a dataset is admin.
    ("/lakehouse.catalog.v1.CatalogService/CreateDataset", Write),
    ("/lakehouse.catalog.v1.CatalogService/GetDataset", Read),
    ("/lakehouse.catalog.v1.CatalogService/ListDatasets", Read),
    ("/lakehouse.catalog.v1.CatalogService/DeleteDataset", Admin),
    ("/lakehouse.catalog.v1.CatalogService/CommitFiles", Write),
    ("/lakehouse.catalog.v1.CatalogService/ResyncDataset", Write),
    ("/lakehouse.catalog.v1.CatalogService/ResyncMissing", Write),
    (
        "/lakehouse.catalog.v1.CatalogService/ListDatasetFiles",
        Read,
    ),
    (
        "/lakehouse.catalog.v1.CatalogService/ListLineageEvents",
        Read,
    ),
    // Ingest.
    ("/lakehouse.ingest.v1.IngestService/IngestPostgres", Write),
    ("/lakehouse.ingest.v1.IngestService/IngestFile", Write),
    ("/lakehouse.ingest.v1.IngestService/ListIngests", Read),
    ("/lakehouse.ingest.v1.IngestService/GetIngest", Read),
    ("/lakehouse.ingest.v1.IngestService/CancelIngest", Write),
    // Deletes objects from storage, like DeleteObject.
    ("/lakehouse.ingest.v1.IngestService/SweepOrphans", Admin),
    // Vector: indexes.
    ("/lakehouse.vector.v1.VectorService/CreateIndex", Write),
    ("/lakehouse.vector.v1.VectorService/RebuildIndex", Write),
    ("/lakehouse.vector.v1.VectorService/CancelBuild", Write),
    ("/lakehouse.vector.v1.VectorService/GetIndex", Read),
    ("/lakehouse.vector.v1.VectorService/ListIndexes", Read),
    ("/lakehouse.vector.v1.VectorService/UpdateIndex", Write),
    ("/lakehouse.vector.v1.VectorService/DeleteIndex", Admin),
    ("/lakehouse.vector.v1.VectorService/RepairIndex", Admin),
    ("/lakehouse.vector.v1.VectorService/Search", Read),
    ("/lakehouse.vector.v1.VectorService/BatchSearch", Read),
    // Vector: trials, the agent's own grant. Reading results is read, so a
    // read-only dashboard token sees them too.
    ("/lakehouse.vector.v1.VectorService/CreateEvalSet", Trials),
    ("/lakehouse.vector.v1.VectorService/GetEvalSet", Read),
    ("/lakehouse.vector.v1.VectorService/ListEvalSets", Read),
    ("/lakehouse.vector.v1.VectorService/DeleteEvalSet", Trials),
    ("/lakehouse.vector.v1.VectorService/RunTrial", Trials),
    ("/lakehouse.vector.v1.VectorService/ListTrials", Read),
    ("/lakehouse.vector.v1.VectorService/GetTrial", Read),
    ("/lakehouse.vector.v1.VectorService/BestTrial", Read),
    ("/lakehouse.vector.v1.VectorService/TuneIndex", Trials),
    ("/lakehouse.vector.v1.VectorService/CancelTrialRun", Trials),
    // Vector: cache and generations.
    ("/lakehouse.vector.v1.VectorService/GetCacheStats", Read),
    ("/lakehouse.vector.v1.VectorService/EvictCache", Admin),
    ("/lakehouse.vector.v1.VectorService/ListGenerations", Read),
    (
        "/lakehouse.vector.v1.VectorService/PromoteGeneration",
        Admin,
    ),
    (
        "/lakehouse.vector.v1.VectorService/RollbackGeneration",
        Admin,
    ),
    ("/lakehouse.vector.v1.VectorService/DeleteGeneration", Admin),
];

/// Services whose every method is open without a token: probes must work
/// without credentials.
pub const OPEN_SERVICES: &[&str] = &["grpc.health.v1.Health"];

/// Reflection services: open unless the policy says otherwise; when gated
/// they need `read`.
pub const REFLECTION_SERVICES: &[&str] = &[
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The scope `path` (`/package.Service/Method`) needs: its table entry, or
/// `admin` for anything not in the table (fail closed).
pub fn required_scope(path: &str) -> Scope {
    SCOPE_TABLE
        .iter()
        .find(|(method, _)| *method == path)
        .map_or(Admin, |(_, scope)| *scope)
}

/// The service part of a method path: `/a.B/C` → `a.B`.
pub fn service_of(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').map_or(path, |(service, _)| service)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    /// Every `/package.Service/Method` declared in the `.proto` files under
    /// `dir`, read as text so an RPC added a minute ago counts.
    fn rpcs_in_protos(dir: &Path) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut files = Vec::new();
        collect_protos(dir, &mut files);
        assert!(!files.is_empty(), "no .proto files under {}", dir.display());
        for file in files {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            let mut package = String::new();
            let mut service = String::new();
            for line in text.lines() {
                let line = line.split("//").next().unwrap_or("").trim();
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("package") => {
                        package = words.next().unwrap_or("").trim_end_matches(';').to_owned();
                    }
                    Some("service") => {
                        service = words.next().unwrap_or("").trim_end_matches('{').to_owned();
                    }
                    Some("rpc") => {
                        let rest: String = words.collect::<Vec<_>>().join(" ");
                        let name = rest.split('(').next().unwrap_or("").trim();
                        assert!(
                            !name.is_empty() && !service.is_empty() && !package.is_empty(),
                            "cannot parse {line:?} in {}",
                            file.display()
                        );
                        out.insert(format!("/{package}.{service}/{name}"));
                    }
                    _ => {}
                }
            }
        }
        out
    }

    fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect_protos(&path, out);
            } else if path.extension().is_some_and(|e| e == "proto") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_rpc_of_every_proto_has_a_scope() {
        let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/lakehouse");
        let rpcs = rpcs_in_protos(&protos);
        // The four services are all there: the parser did not go blind.
        for service in [
            "StorageService/PutObject",
            "CatalogService/CommitFiles",
            "IngestService/IngestFile",
            "VectorService/Search",
        ] {
            assert!(
                rpcs.iter().any(|rpc| rpc.ends_with(service)),
                "{service} not found in {rpcs:?}"
            );
        }
        let mapped: BTreeSet<&str> = SCOPE_TABLE.iter().map(|(m, _)| *m).collect();
        let missing: Vec<&String> = rpcs
            .iter()
            .filter(|rpc| !mapped.contains(rpc.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "RPCs without a scope: add them to SCOPE_TABLE in services/shared/src/auth/scope_table.rs: {missing:#?}"
        );
    }

    #[test]
    fn every_rpc_of_the_compiled_descriptor_set_has_a_scope() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(lakehouse_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut count = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    count += 1;
                    assert!(
                        SCOPE_TABLE.iter().any(|(m, _)| *m == path),
                        "{path} has no scope in SCOPE_TABLE"
                    );
                }
            }
        }
        assert!(count > 30, "only {count} methods in the descriptor set");
    }

    #[test]
    fn table_has_no_duplicates_and_well_formed_paths() {
        let mut seen = BTreeSet::new();
        for (path, _) in SCOPE_TABLE {
            assert!(seen.insert(*path), "{path} listed twice");
            assert!(path.starts_with("/lakehouse."), "{path}");
            assert_eq!(path.matches('/').count(), 2, "{path}");
        }
    }

    #[test]
    fn unknown_methods_need_admin() {
        assert_eq!(
            required_scope("/lakehouse.storage.v1.StorageService/GetObject"),
            Read
        );
        assert_eq!(
            required_scope("/lakehouse.storage.v1.StorageService/Nope"),
            Admin
        );
        assert_eq!(
            service_of("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health"
        );
    }
}
