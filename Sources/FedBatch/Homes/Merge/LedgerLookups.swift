import FedBatchStore

/// What a merge asks state.db about its inputs, answered from one query per
/// batch of inputs: `prefetch` loads the answers for the digests and sites
/// named, and the lookups after it are dictionary reads. A digest or site
/// nobody announced is still looked up on its own, so the answers never
/// depend on what was announced. Used on the merge's consuming thread only.
final class LedgerLookups {
    private let ledger: Ledger
    private var merged: [String: Int] = [:], checkedDigests: Set<String> = []
    private var sequences: [String: Int64] = [:], checkedSites: Set<String> = []

    init(_ ledger: Ledger) { self.ledger = ledger }

    func prefetch(digests: [String], sites: [String]) throws {
        let newDigests = digests.filter { !checkedDigests.contains($0) }
        merged.merge(try ledger.mergedGenerations(of: newDigests)) { a, _ in a }
        checkedDigests.formUnion(newDigests)
        let newSites = sites.filter { !checkedSites.contains($0) }
        sequences.merge(try ledger.lastSequences(of: newSites)) { a, _ in a }
        checkedSites.formUnion(newSites)
    }

    func mergedInto(_ digest: String) throws -> Int? {
        checkedDigests.contains(digest) ? merged[digest] : try ledger.mergedInto(digest)?.generation
    }

    func lastSequence(_ site: String) throws -> Int64? {
        checkedSites.contains(site) ? sequences[site] : try ledger.lastSequence(site: site)
    }
}
