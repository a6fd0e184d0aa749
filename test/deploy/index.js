// `node --test test/deploy` resolves a directory argument as a module (Node 24
// does not expand directories there), which lands on this index; the suite
// itself lives in manifests.test.ts, which `npm test`'s glob finds directly.
import './manifests.test.ts';
