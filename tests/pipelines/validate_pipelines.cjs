// Validates Azure Pipelines YAML files offline with Microsoft's own engine: the npm package
// azure-pipelines-language-service (what the VS Code extension runs) and the service schema
// (service-schema.json, as vendored by PyPI's check-jsonschema).
//
// Usage: node validate_pipelines.cjs <service-schema.json> <file.yaml>...
// Prints one JSON object {"<file>": [{"severity", "line", "message"}, ...]} on stdout and exits
// 0; a missing package or schema exits 2 with one line on stderr. Warnings count: the service
// reports an unknown key (a typo such as `lockBehavoir`) as a warning, and Azure DevOps refuses it.
'use strict';
const fs = require('fs');
const path = require('path');

const [schemaFile, ...files] = process.argv.slice(2);
if (!schemaFile || files.length === 0) {
  process.stderr.write('usage: node validate_pipelines.cjs <service-schema.json> <file.yaml>...\n');
  process.exit(2);
}
let service;
try {
  service = require('azure-pipelines-language-service');
} catch (error) {
  process.stderr.write(`azure-pipelines-language-service is not installed (run npm ci): ${error.message}\n`);
  process.exit(2);
}
const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8'));
// The service logs its schema lookups with console.log; keep stdout for the result.
console.log = (...args) => process.stderr.write(args.join(' ') + '\n');

const SEVERITY = { 1: 'error', 2: 'warning', 3: 'information', 4: 'hint' };
const languageService = service.getLanguageService(
  (uri) => Promise.reject(new Error(`no schema downloads (asked for ${uri})`)), [], undefined, undefined, Promise);
languageService.configure({ validate: true, schemas: [{ uri: 'file://' + path.resolve(schemaFile), fileMatch: ['*'], schema }] });

(async () => {
  const result = {};
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    const document = service.TextDocument.create('file://' + path.resolve(file), 'azure-pipelines', 1, text);
    const diagnostics = await languageService.doValidation(document, service.parse(text));
    result[file] = diagnostics.map((d) => ({
      severity: SEVERITY[d.severity] || String(d.severity), line: d.range.start.line + 1, message: d.message,
    }));
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})().catch((error) => {
  process.stderr.write(`validation failed: ${error.stack || error}\n`);
  process.exit(2);
});
