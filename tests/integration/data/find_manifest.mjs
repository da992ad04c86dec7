// Resolve files from a versions-manifest.json the way actions/setup-python does, with the real
// @actions/tool-cache code. Usage: node find_manifest.mjs NODE_MODULES MANIFEST OS_VERSION_ID QUERIES
// QUERIES: a JSON list of [version spec, arch] pairs, e.g. [["3.14", "x64"], ["3.14", "x64-freethreaded"]]
import fs from 'node:fs';

const [nodeModules, manifestPath, osVersion, queriesJson] = process.argv.slice(2);
const tc = await import(`${nodeModules}/@actions/tool-cache/lib/tool-cache.js`);
const mm = await import(`${nodeModules}/@actions/tool-cache/lib/manifest.js`);
// Pretend to be a runner whose /etc/os-release says VERSION_ID=<osVersion>.
mm._internal.readLinuxVersionFile = () => `NAME="runner"\nVERSION_ID="${osVersion}"\n`;
const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
const queries = JSON.parse(queriesJson);
const out = {};
for (const [spec, arch] of queries) {
  const found = await tc.findFromManifest(spec, true, manifest, arch);
  out[`${spec} ${arch}`] = found ? found.files[0].download_url : null;
}
console.log(JSON.stringify(out));
