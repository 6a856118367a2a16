// The tools, resources and prompts the MCP conformance suite's server scenarios call, by the
// exact names, URIs and contents the scenarios expect. One McpServer per session gets them.

import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { completable } from '@modelcontextprotocol/sdk/server/completable.js';
import {
  SetLevelRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

// A 1x1 red PNG.
const PNG_1X1 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';

// 0.1 s of 8 kHz, 8-bit mono silence as a complete RIFF/WAVE file.
function silentWav() {
  const samples = 800;
  const b = Buffer.alloc(44 + samples, 0x80);
  b.write('RIFF', 0);
  b.writeUInt32LE(36 + samples, 4);
  b.write('WAVEfmt ', 8);
  b.writeUInt32LE(16, 16); // fmt chunk size
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(8000, 24); // sample rate
  b.writeUInt32LE(8000, 28); // byte rate
  b.writeUInt16LE(1, 32); // block align
  b.writeUInt16LE(8, 34); // bits per sample
  b.write('data', 36);
  b.writeUInt32LE(samples, 40);
  return b.toString('base64');
}
const WAV = silentWav();

const LEVELS = ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency'];
const WATCHED = 'test://watched-resource';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (t) => ({ content: [{ type: 'text', text: t }] });
const toolError = (t) => ({ ...text(t), isError: true });

// `hub` is shared by all sessions: the watched resource's revision and a way to tell every
// session that subscribed to a URI that it changed.
export function createHub() {
  const sessions = new Set();
  return {
    revision: 0,
    sessions,
    async changed(uri) {
      for (const s of sessions) {
        if (s.subscriptions.has(uri)) {
          // Not tied to any request: the SDK sends it on the session's GET stream (and keeps it
          // in the event store when that stream is not open).
          await s.mcp.server.sendResourceUpdated({ uri }).catch(() => {});
        }
      }
    },
  };
}

export function createSessionServer(hub) {
  const mcp = new McpServer(
    { name: 'portcullis-conformance-server', version: '1.0.0' },
    {
      capabilities: {
        logging: {},
        resources: { subscribe: true, listChanged: true },
        tools: { listChanged: true },
        prompts: { listChanged: true },
      },
    },
  );
  const session = { mcp, subscriptions: new Set(), logLevel: undefined };

  // Session-scoped logging level; replaces the SDK's own handler so the tools below can
  // filter messages they send on their request's stream.
  mcp.server.setRequestHandler(SetLevelRequestSchema, async (req) => {
    session.logLevel = req.params.level;
    return {};
  });
  const log = async (extra, level, data) => {
    if (session.logLevel && LEVELS.indexOf(level) < LEVELS.indexOf(session.logLevel)) return;
    await extra.sendNotification({
      method: 'notifications/message',
      params: { level, logger: 'conformance-server', data },
    });
  };

  mcp.server.setRequestHandler(SubscribeRequestSchema, async (req) => {
    session.subscriptions.add(req.params.uri);
    return {};
  });
  mcp.server.setRequestHandler(UnsubscribeRequestSchema, async (req) => {
    session.subscriptions.delete(req.params.uri);
    return {};
  });

  registerTools(mcp, hub, log);
  registerResources(mcp, hub);
  registerPrompts(mcp);
  return session;
}

function registerTools(mcp, hub, log) {
  const simple = (name, description, result) =>
    mcp.registerTool(name, { description }, async () => result);

  simple('test_simple_text', 'Returns one text block.',
    text('This is a simple text response for testing.'));
  simple('test_image_content', 'Returns one image block (a 1x1 PNG).',
    { content: [{ type: 'image', data: PNG_1X1, mimeType: 'image/png' }] });
  simple('test_audio_content', 'Returns one audio block (a short WAV).',
    { content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] });
  simple('test_embedded_resource', 'Returns one embedded text resource.', {
    content: [{
      type: 'resource',
      resource: {
        uri: 'test://embedded-resource',
        mimeType: 'text/plain',
        text: 'This is an embedded resource content.',
      },
    }],
  });
  simple('test_multiple_content_types', 'Returns text, image and resource blocks.', {
    content: [
      { type: 'text', text: 'Multiple content types test:' },
      { type: 'image', data: PNG_1X1, mimeType: 'image/png' },
      {
        type: 'resource',
        resource: {
          uri: 'test://mixed-content-resource',
          mimeType: 'application/json',
          text: JSON.stringify({ test: 'data', value: 123 }),
        },
      },
    ],
  });
  simple('test_error_handling', 'Always fails with a tool error (isError: true).',
    toolError('This tool intentionally returns an error for testing'));

  mcp.registerTool('test_tool_with_logging',
    { description: 'Sends three info log messages while it runs.' },
    async (extra) => {
      await log(extra, 'info', 'Tool execution started');
      await sleep(50);
      await log(extra, 'info', 'Tool processing data');
      await sleep(50);
      await log(extra, 'info', 'Tool execution completed');
      return text('Tool with logging executed successfully');
    });

  mcp.registerTool('test_tool_with_progress',
    { description: 'Reports progress 0, 50 and 100 of 100 when given a progress token.' },
    async (extra) => {
      const progressToken = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken, progress, total: 100 },
          });
        }
        if (progress < 100) await sleep(50);
      }
      return text('Tool with progress executed successfully');
    });

  mcp.registerTool('test_sampling', {
    description: 'Asks the client to sample an LLM (sampling/createMessage).',
    inputSchema: { prompt: z.string().describe('The prompt to send to the LLM') },
  }, async ({ prompt }, extra) => {
    if (!mcp.server.getClientCapabilities()?.sampling) {
      return toolError('The client does not support sampling');
    }
    // relatedRequestId puts the request on this tools/call's response stream.
    const result = await mcp.server.createMessage({
      messages: [{ role: 'user', content: { type: 'text', text: prompt } }],
      maxTokens: 100,
    }, { relatedRequestId: extra.requestId });
    const blocks = Array.isArray(result.content) ? result.content : [result.content];
    const reply = blocks.map((b) => (b.type === 'text' ? b.text : `[${b.type}]`)).join('\n');
    return text(`LLM response: ${reply}`);
  });

  const elicitTool = (name, description, inputSchema, request) => {
    const run = async (args, extra) => {
      if (!mcp.server.getClientCapabilities()?.elicitation) {
        return toolError('The client does not support elicitation');
      }
      // elicitInput also checks an accepted answer against the requested schema.
      const r = await mcp.server.elicitInput(request(args), { relatedRequestId: extra.requestId });
      return text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
    };
    // The SDK calls a tool without an input schema with `extra` alone.
    mcp.registerTool(name, { description, inputSchema },
      inputSchema ? run : (extra) => run({}, extra));
  };

  elicitTool('test_elicitation', 'Asks the user for a username and an email (elicitation/create).',
    { message: z.string().describe('The message to show the user') },
    ({ message }) => ({
      message,
      requestedSchema: {
        type: 'object',
        properties: {
          username: { type: 'string', description: "User's response" },
          email: { type: 'string', description: "User's email address" },
        },
        required: ['username', 'email'],
      },
    }));

  elicitTool('test_elicitation_sep1034_defaults',
    'Elicitation whose schema has a default for every primitive type (SEP-1034).', undefined,
    () => ({
      message: 'Please review and update the form fields with defaults',
      requestedSchema: {
        type: 'object',
        properties: {
          name: { type: 'string', description: 'User name', default: 'John Doe' },
          age: { type: 'integer', description: 'User age', default: 30 },
          score: { type: 'number', description: 'User score', default: 95.5 },
          status: {
            type: 'string', description: 'User status',
            enum: ['active', 'inactive', 'pending'], default: 'active',
          },
          verified: { type: 'boolean', description: 'Verification status', default: true },
        },
      },
    }));

  elicitTool('test_elicitation_sep1330_enums',
    'Elicitation whose schema has all five enum forms (SEP-1330).', undefined,
    () => ({
      message: 'Please select options from the enum fields',
      requestedSchema: {
        type: 'object',
        properties: {
          untitledSingle: {
            type: 'string', description: 'Untitled single-select',
            enum: ['option1', 'option2', 'option3'],
          },
          titledSingle: {
            type: 'string', description: 'Titled single-select',
            oneOf: [
              { const: 'value1', title: 'First Option' },
              { const: 'value2', title: 'Second Option' },
              { const: 'value3', title: 'Third Option' },
            ],
          },
          legacyEnum: {
            type: 'string', description: 'Legacy titled enum (enumNames, deprecated)',
            enum: ['opt1', 'opt2', 'opt3'],
            enumNames: ['Option One', 'Option Two', 'Option Three'],
          },
          untitledMulti: {
            type: 'array', description: 'Untitled multi-select',
            items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
          },
          titledMulti: {
            type: 'array', description: 'Titled multi-select',
            items: {
              anyOf: [
                { const: 'value1', title: 'First Choice' },
                { const: 'value2', title: 'Second Choice' },
                { const: 'value3', title: 'Third Choice' },
              ],
            },
          },
        },
      },
    }));

  // Not used by the suite: changes test://watched-resource so that subscribed sessions get
  // notifications/resources/updated on their GET stream (and a resumption test has an event
  // to resume).
  mcp.registerTool('test_update_watched_resource',
    { description: 'Changes test://watched-resource and notifies its subscribers.' },
    async () => {
      hub.revision += 1;
      await hub.changed(WATCHED);
      return text(`test://watched-resource is now at revision ${hub.revision}`);
    });
}

function registerResources(mcp, hub) {
  mcp.registerResource('static-text', 'test://static-text',
    { description: 'A static text resource.', mimeType: 'text/plain' },
    async (uri) => ({
      contents: [{
        uri: uri.href, mimeType: 'text/plain',
        text: 'This is the content of the static text resource.',
      }],
    }));
  mcp.registerResource('static-binary', 'test://static-binary',
    { description: 'A static binary resource (a 1x1 PNG).', mimeType: 'image/png' },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: 'image/png', blob: PNG_1X1 }] }));
  mcp.registerResource('watched-resource', WATCHED,
    { description: 'A resource that can be subscribed to.', mimeType: 'text/plain' },
    async (uri) => ({
      contents: [{ uri: uri.href, mimeType: 'text/plain', text: `revision ${hub.revision}` }],
    }));
  mcp.registerResource('template-data',
    new ResourceTemplate('test://template/{id}/data', { list: undefined }),
    { description: 'Data for one id, from a URI template.', mimeType: 'application/json' },
    async (uri, { id }) => ({
      contents: [{
        uri: uri.href, mimeType: 'application/json',
        text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
      }],
    }));
}

function registerPrompts(mcp) {
  mcp.registerPrompt('test_simple_prompt', { description: 'A prompt without arguments.' },
    async () => ({
      messages: [{ role: 'user', content: { type: 'text', text: 'This is a simple prompt for testing.' } }],
    }));

  const suggestions = ['paris', 'park', 'party'];
  mcp.registerPrompt('test_prompt_with_arguments', {
    description: 'A prompt with two arguments (arg1 offers completions).',
    argsSchema: {
      arg1: completable(z.string().describe('First test argument'),
        (value) => suggestions.filter((s) => s.startsWith(value ?? ''))),
      arg2: z.string().describe('Second test argument'),
    },
  }, async ({ arg1, arg2 }) => ({
    messages: [{
      role: 'user',
      content: { type: 'text', text: `Prompt with arguments: arg1='${arg1}', arg2='${arg2}'` },
    }],
  }));

  mcp.registerPrompt('test_prompt_with_embedded_resource', {
    description: 'A prompt that embeds a resource.',
    argsSchema: { resourceUri: z.string().describe('URI of the resource to embed') },
  }, async ({ resourceUri }) => ({
    messages: [
      {
        role: 'user',
        content: {
          type: 'resource',
          resource: { uri: resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
        },
      },
      { role: 'user', content: { type: 'text', text: 'Please process the embedded resource above.' } },
    ],
  }));

  mcp.registerPrompt('test_prompt_with_image', { description: 'A prompt with an image.' },
    async () => ({
      messages: [
        { role: 'user', content: { type: 'image', data: PNG_1X1, mimeType: 'image/png' } },
        { role: 'user', content: { type: 'text', text: 'Please analyze the image above.' } },
      ],
    }));
}
