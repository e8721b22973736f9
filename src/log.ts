import { AsyncLocalStorage } from 'node:async_hooks';
import winston from 'winston';

export type Logger = winston.Logger;

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

/** Fields every log line inside one request carries: the method, the volume, a request id. */
export interface LogContext {
  request?: string;
  volume?: string;
  mountId?: string;
  reqId?: number;
}

const context = new AsyncLocalStorage<LogContext>();

/** Runs `fn` with `fields` added to every log line written inside it, however deep. */
export function withLogContext<T>(fields: LogContext, fn: () => T): T {
  return context.run({ ...context.getStore(), ...fields }, fn);
}

const addContext = winston.format((info) => Object.assign(info, { ...context.getStore(), ...info }));

/** One JSON object a line on stderr, or appended to `file`. */
export function createLogger(level: LogLevel, file?: string): Logger {
  const transport = file
    ? new winston.transports.File({ filename: file })
    : new winston.transports.Stream({ stream: process.stderr });
  return winston.createLogger({
    level,
    format: winston.format.combine(addContext(), winston.format.timestamp(), winston.format.json()),
    transports: [transport],
  });
}

/** A logger that writes nothing: for unit tests. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
