;;;; smls from Common Lisp: SBCL with drakma (HTTP) and yason (JSON), loaded with ASDF.
;;;; Debian: apt-get install sbcl cl-drakma cl-yason
;;;; Run:    sbcl --script clients/lisp/embed.lisp [URL]

(require :asdf)
;; Quiet: compiling the libraries on first use prints a lot.
(let ((*standard-output* (make-broadcast-stream))
      (*error-output* (make-broadcast-stream)))
  (asdf:load-system :drakma)
  (asdf:load-system :yason))

;; smls answers application/json; read it as UTF-8 text rather than octets.
(push '("application" . "json") drakma:*text-content-types*)

(defun smls-url ()
  (or (second sb-ext:*posix-argv*) (sb-ext:posix-getenv "SMLS_URL") "http://127.0.0.1:8000"))

(defun answer (body status &rest more)
  "The parsed JSON of an answer, or an error with smls's message."
  (declare (ignore more))
  (let ((json (yason:parse body)))
    (unless (<= 200 status 299)
      (error "smls answered ~a: ~a" status (gethash "message" (gethash "error" json))))
    json))

(defun embed (texts &optional model)
  "POST TEXTS as the form field message (a JSON array), by MODEL (a served name; nil: the default).
Return the vectors and the dimension."
  (let ((json (multiple-value-call #'answer
                (drakma:http-request (concatenate 'string (smls-url) "/embed")
                                     :method :post
                                     :parameters (append (list (cons "message" (with-output-to-string (s) (yason:encode texts s))))
                                                         (when model (list (cons "model" model))))
                                     :external-format-out :utf-8
                                     :external-format-in :utf-8))))
    (values (gethash "embeddings" json) (gethash "dimension" json))))

(defun object (&rest keys-and-values)
  "A JSON object (a hash table) from alternating keys and values."
  (let ((table (make-hash-table :test 'equal)))
    (loop for (key value) on keys-and-values by #'cddr do (setf (gethash key table) value))
    table))

(defun call-json (path &key body (method (if body :post :get)) parameters)
  "Send METHOD to PATH with BODY (a hash table, sent as JSON) or query PARAMETERS (an alist); return the parsed answer."
  (multiple-value-call #'answer
    (drakma:http-request (concatenate 'string (smls-url) path)
                         :method method
                         :parameters parameters
                         :content-type "application/json"
                         :content (when body (with-output-to-string (s) (yason:encode body s)))
                         :external-format-out :utf-8
                         :external-format-in :utf-8)))

(defun rerank (query documents &optional model)
  "The documents' indexes, best first, with the model and scorer that ranked them."
  (let ((json (call-json "/rerank" :body (if model
                                             (object "query" query "documents" documents "model" model)
                                             (object "query" query "documents" documents)))))
    (values (mapcar (lambda (r) (gethash "index" r)) (gethash "results" json))
            (gethash "model" json)
            (gethash "scorer" json))))

(defun cosine (a b)
  (let ((dot 0d0) (na 0d0) (nb 0d0))
    (map nil (lambda (x y) (incf dot (* x y)) (incf na (* x x)) (incf nb (* y y))) a b)
    (/ dot (sqrt (* na nb)))))

(multiple-value-bind (vectors dimension)
    (embed '("The cat sits on the mat." "A cat is sitting on a rug." "Stock markets fell sharply." "Café crème, s'il vous plaît."))
  (format t "vectors: ~d, dimension: ~d~%" (length vectors) dimension)
  (format t "cosine(cat, cat): ~,3f~%" (cosine (first vectors) (second vectors)))
  (format t "cosine(cat, markets): ~,3f~%" (cosine (first vectors) (third vectors))))

;; Several models: list them, embed with the last embedding model listed, then rerank.
(let* ((listing (call-json "/models"))
       (models (gethash "models" listing))
       (embedders (remove-if-not (lambda (m) (string= (gethash "kind" m) "embedding")) models))
       (last-embedder (gethash "name" (car (last embedders))))
       (documents '("Stock markets fell sharply." "Cats sleep up to sixteen hours a day." "Paris is the capital of France.")))
  (format t "models: ~{~a~^, ~}~%" (mapcar (lambda (m) (format nil "~a (~a)" (gethash "name" m) (gethash "kind" m))) models))
  (multiple-value-bind (vectors dimension) (embed '("Hello world!") last-embedder)
    (declare (ignore vectors))
    (format t "model ~a: dimension ~d~%" last-embedder dimension))
  (dolist (model (list nil (gethash "default" listing)))
    (multiple-value-bind (order name scorer) (rerank "How long do cats sleep?" documents model)
      (format t "rerank (~a, ~a): ~{~d~^ ~}~%" name scorer order))))

;; Documents over HTTP: upload one as JSON, search across every document, delete it.
(let ((upload (call-json "/documents/lisp-notes"
                         :method :put
                         :body (object "texts" (list (object "text" "Molten lava poured down the side of the volcano." "pages" (list "p1")))
                                       "pages" (list (object "id" "p1" "page_number" 7))))))
  (format t "uploaded: ~a, ~d sentence(s)~%" (gethash "doc_id" upload) (gethash "sentences" upload)))
(let ((hit (first (gethash "results" (call-json "/search" :parameters '(("q" . "an erupting volcano") ("k" . "1")))))))
  (format t "search: ~a, sentence ~d, page ~d~%" (gethash "doc_id" hit) (gethash "index" hit) (gethash "number" (first (gethash "pages" hit)))))
(format t "deleted: ~:[no~;yes~]~%" (gethash "deleted" (call-json "/documents/lisp-notes" :method :delete)))

;; Counting tokens without running the model: the default model's ids for a text.
(let ((counted (first (gethash "texts" (call-json "/tokenize" :body (object "text" "Hello world!"))))))
  (format t "tokens: ~d [~{~d~^, ~}]~%" (gethash "count" counted) (gethash "ids" counted)))
