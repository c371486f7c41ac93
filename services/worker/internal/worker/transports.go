package worker

import (
	"fmt"

	"refonte.ai/callbacks/pkg/email"
	"refonte.ai/callbacks/pkg/target"
	"refonte.ai/callbacks/pkg/version"
	"refonte.ai/callbacks/pkg/webhook"
)

// NewTransports builds one transport per kind of target from the configuration. Without
// SMTP_ADDR there is no email transport, and email targets fail at once with "email callbacks
// are not configured".
func NewTransports(cfg Config) (map[target.Kind]Transport, error) {
	userAgent := "Refonte-Callbacks/" + version.String()
	transports := map[target.Kind]Transport{
		target.HTTP: webhook.New(webhook.Config{
			Timeout: cfg.Timeout, AllowPrivate: cfg.AllowPrivate, AllowedCIDRs: cfg.AllowedCIDRs,
			Ports: cfg.Ports, UserAgent: userAgent, MaxConnsPerHost: cfg.HostConcurrency,
		}),
	}
	if cfg.SMTPAddr != "" {
		mailer, err := email.New(email.Config{Addr: cfg.SMTPAddr, From: cfg.SMTPFrom, Username: cfg.SMTPUser,
			Password: cfg.SMTPPassword, Timeout: cfg.Timeout, UserAgent: userAgent})
		if err != nil {
			return nil, fmt.Errorf("email transport: %w", err)
		}
		transports[target.Email] = mailer
	}
	return transports, nil
}

// AlertMailer is what mails endpoint alerts: the email transport's relay (SMTP_ADDR), or nil
// when there is none.
func AlertMailer(transports map[target.Kind]Transport) notifier {
	if n, ok := transports[target.Email].(notifier); ok {
		return n
	}
	return nil
}
