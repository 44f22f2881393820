//! Sans-IO SIP: message model, parser, serializer, URIs, headers, transactions.
