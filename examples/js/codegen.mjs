// Typed code for the examples, from the server's schema, with GraphQL Code Generator's core and
// its plugins (the @graphql-codegen/cli package does the same from a codegen.ts; this script needs
// no CLI). Run: npm run codegen. It writes
//   src/generated/schema.ts   every type of the schema (plugin typescript), and
//   src/generated/graphql.ts  the types of src/operations.graphql and typed documents for them
//                             (plugins typescript-operations and typed-document-node).
// The operations are validated against the schema: one that asks for a field the server no longer
// has fails here, and one whose result changed shape fails `tsc` where the examples use it.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { codegen } from '@graphql-codegen/core';
import * as typedDocumentNode from '@graphql-codegen/typed-document-node';
import * as typescript from '@graphql-codegen/typescript';
import * as typescriptOperations from '@graphql-codegen/typescript-operations';
import { buildSchema, parse } from 'graphql';

const here = (path) => new URL(path, import.meta.url);
const schemaText = readFileSync(here('../../schema.graphql'), 'utf8');
const operations = 'src/operations.graphql';

const common = {
  schema: parse(schemaText),
  schemaAst: buildSchema(schemaText),
  config: {
    // Decimal and DateTime arrive as JSON strings, so that no digit is lost; Long as a number.
    scalars: { DateTime: 'string', Decimal: 'string', Long: 'number' },
    strictScalars: true,
    enumsAsTypes: true,
    useTypeImports: true,
  },
};

const outputs = {
  'src/generated/schema.ts': await codegen({
    ...common,
    filename: 'src/generated/schema.ts',
    documents: [],
    plugins: [{ typescript: {} }],
    pluginMap: { typescript },
  }),
  'src/generated/graphql.ts': await codegen({
    ...common,
    filename: 'src/generated/graphql.ts',
    documents: [{ location: operations, document: parse(readFileSync(here(operations), 'utf8')) }],
    plugins: [{ typescriptOperations: {} }, { typedDocumentNode: {} }],
    pluginMap: { typescriptOperations, typedDocumentNode },
  }),
};

mkdirSync(here('src/generated/'), { recursive: true });
for (const [path, text] of Object.entries(outputs)) {
  writeFileSync(here(path), text);
  console.log(`wrote ${path}`);
}
