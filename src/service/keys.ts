/**
 * Our Redis keys beside BullMQ's (`<prefix>:generate:*`). The job id sits in a hash tag so that
 * one job's keys land on one Redis Cluster slot (the event-append script touches several).
 */
export class Keys {
  constructor(readonly prefix: string) {}

  events(jobId: string): string {
    return `${this.prefix}:job:{${jobId}}:events`;
  }

  /** Last event id of a job (SSE ids are 1, 2, 3, ...). */
  eventSeq(jobId: string): string {
    return `${this.prefix}:job:{${jobId}}:seq`;
  }

  /** Set once a terminal event is written: later events of that job are dropped. */
  eventsDone(jobId: string): string {
    return `${this.prefix}:job:{${jobId}}:done`;
  }

  image(jobId: string, index: number): string {
    return `${this.prefix}:job:{${jobId}}:image:${index}`;
  }

  cancelFlag(jobId: string): string {
    return `${this.prefix}:job:{${jobId}}:cancel`;
  }

  idempotency(jobId: string): string {
    return `${this.prefix}:idempotency:{${jobId}}`;
  }

  rate(client: string, window: number): string {
    return `${this.prefix}:rate:${client}:${window}`;
  }

  /** Pub/sub channel on which the API asks every worker to abort a job. */
  get cancelChannel(): string {
    return `${this.prefix}:cancel`;
  }
}
