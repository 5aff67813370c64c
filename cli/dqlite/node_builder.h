#pragma once
// Building a Node from a backend directory's files, one file at a time (raft's segment, snapshot
// and metadata formats, dqlite's cluster.yaml and info.yaml). node_dir.cc reads the files from a
// directory or an archive; this is where their bytes are understood.

#include <memory>
#include <string>
#include <string_view>

#include "cli/dqlite/node_dir.h"
#include "core/result.h"

namespace stateguard::cli::dqlite {

/// Whether a file name is one raft or dqlite keeps in a backend directory (segments, snapshots
/// and their .meta, metadata1/2, cluster.yaml, info.yaml).
bool isDqliteFile(std::string_view name);

/// Takes a node's files in any order and builds the Node with every problem found.
class NodeBuilder {
 public:
  /// `node` carries what the reader knows already: input, name, archive prefix, notes.
  explicit NodeBuilder(Node node);
  ~NodeBuilder();
  NodeBuilder(const NodeBuilder&) = delete;
  NodeBuilder& operator=(const NodeBuilder&) = delete;

  /// One file by its name in the backend directory; an error only for what makes the node
  /// unreadable as a whole (problems in a file are recorded on the Node instead).
  Status addFile(const std::string& name, std::string content);
  /// The node, once every file was added: log, snapshots, metadata and configuration checked.
  Node finish();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stateguard::cli::dqlite
